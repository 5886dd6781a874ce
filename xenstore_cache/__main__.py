import sys

from xenstore_cache.cli import main

sys.exit(main())
