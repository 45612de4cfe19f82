"""Thin I/O adapters of the bridge daemon: the audit log (``audit``), systemd notify (``systemd``) and
the Prometheus metrics page (``metrics``)."""
