"""`python -m bridge` is the same as the `sigbridge` console script."""

import sys

from bridge.cli import main

sys.exit(main())
