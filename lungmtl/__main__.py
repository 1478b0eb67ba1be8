"""``python -m lungmtl``: the same as the ``lungmtl`` command (used by torchrun relaunches)."""

import sys

from .cli import main

sys.exit(main())
