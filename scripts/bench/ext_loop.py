"""The trivial call of the overhead benchmark's --ext mode: a C extension's builtin (fxext.nop,
tests/fixture/fxext.cc) calling libfxnative's empty fxn_nop through its GOT — what the GOT
trampoline of `--lib fxnative` sees.

Usage: ext_loop.py FXEXT_DIR CALLS   (prints ns per call of the loop alone)
"""
import sys
import time

sys.path.insert(0, sys.argv[1])
import fxext  # noqa: E402

n = int(sys.argv[2])
f = fxext.nop
t0 = time.perf_counter_ns()
for _ in range(n):
    f()
t1 = time.perf_counter_ns()
print((t1 - t0) / max(n, 1))
