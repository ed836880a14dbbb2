"""Calls fxext.spin_ns(1000) N times from one line: a bracketed builtin's pair taken past the
calls after which its timing thins out (e2e_pyext's thinned_timing_keeps_the_split).

Usage: pyext_spin_loop.py N   (PYTHONPATH holds the venv's fixture directory)
"""
import sys

import fxext

n = int(sys.argv[1])
for _ in range(n):
    fxext.spin_ns(1000)
print("spins", n)
