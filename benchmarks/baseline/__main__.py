import sys

from benchmarks.baseline.build import BaselineUnavailable
from benchmarks.baseline.run import main

try:
    sys.exit(main())
except BaselineUnavailable as exc:
    print(f"baseline unavailable: {exc}", file=sys.stderr)
    sys.exit(2)
