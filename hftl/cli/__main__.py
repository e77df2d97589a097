"""`python -m hftl.cli` is `hftl` (the form `accelerate launch ... -m hftl.cli train ...` and torchrun take)."""

import sys

from hftl.cli import main

sys.exit(main())
