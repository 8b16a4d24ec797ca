"""``python -m imckit``: the command line (:mod:`imckit.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
