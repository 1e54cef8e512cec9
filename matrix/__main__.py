"""`python -m matrix`: see matrix/cli.py."""

import sys

from .cli import main

sys.exit(main())
