"""Entry point for ``python -m pyxen.lab``."""

import sys

from pyxen.lab.cli import main

sys.exit(main())
