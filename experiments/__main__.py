"""`python -m experiments` is the `stormsim` command."""

import sys

from experiments.cli import main

sys.exit(main())
