"""``python -m slotlab``: the same as the ``slotlab`` command, exit status included."""

import sys

from slotlab.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
