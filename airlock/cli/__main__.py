"""``python -m airlock.cli …`` is ``airlock …`` (tests and benchmarks start processes so)."""

import sys

from airlock.cli import main

sys.exit(main())
