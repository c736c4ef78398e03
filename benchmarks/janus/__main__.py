"""python -m benchmarks.janus"""

import sys

from benchmarks.janus.cli import main

if __name__ == "__main__":
    sys.exit(main())
