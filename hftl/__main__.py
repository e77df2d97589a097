"""`python -m hftl ...` is the `hftl` command."""

import sys

from hftl.cli import main

if __name__ == "__main__":
    sys.exit(main())
