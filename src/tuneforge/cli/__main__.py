"""`python -m tuneforge.cli …`, the same as `tuneforge …` (a package's own `if __name__ == "__main__"` never runs)."""

import sys

from . import run

sys.exit(run())
