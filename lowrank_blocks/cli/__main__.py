"""``python -m lowrank_blocks.cli``: the ``lowrank-blocks`` command (as ``python -m lowrank_blocks``)."""

import sys

from . import main

if __name__ == "__main__":  # importing this module (doctest collection) runs nothing
    sys.exit(main())
