"""``python -m spineseg``: the same command line as ``spineseg``."""
import sys

from spineseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
