"""``python -m slotlab``: the same as the ``slotlab`` command."""

from slotlab.cli.main import main

if __name__ == "__main__":
    main()
