"""``python -m dataplane`` is the ``vxdp`` command."""

import sys

from dataplane.cli import main

if __name__ == "__main__":
    sys.exit(main())
