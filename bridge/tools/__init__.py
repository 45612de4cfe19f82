"""Operator tools on the command line, one module per `sigbridge` command: ``send`` and ``listen`` (a
session client), ``dryrun`` (`sigbridge try`), ``replay``, ``init`` (the first-run wizard). Their
argparse definitions are in ``parsers`` (imported for ``--help``; the work is imported only when a
command runs)."""
