"""Entry point for ``python -m pyxen.lab``."""

import sys

from pyxen.lab.host.cli import main

sys.exit(main())
