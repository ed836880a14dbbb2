"""`python -m ffiprof ...`: the ffiprof command line (run, attach, report, flamegraph, diff)."""

import sys

from ._binary import main

if __name__ == "__main__":
    sys.exit(main())
