"""`python -m benchmarks [MODULE ...]`: run benchmarks and keep their figures (see harness)."""

import sys

from benchmarks.harness import main

sys.exit(main())
