"""``python -m lowrank_blocks``: the ``lowrank-blocks`` command."""

import sys

from .cli import main

sys.exit(main())
