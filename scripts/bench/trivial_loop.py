"""The trivial call of the overhead benchmark: libm's fabs(1.0) through ctypes, argtypes set.

Usage: trivial_loop.py CALLS   (prints ns per call of the loop alone)
"""
import ctypes
import sys
import time

libm = ctypes.CDLL("libm.so.6")
f = libm.fabs
f.argtypes = [ctypes.c_double]
f.restype = ctypes.c_double
n = int(sys.argv[1])
t0 = time.perf_counter_ns()
for _ in range(n):
    f(1.0)
t1 = time.perf_counter_ns()
print((t1 - t0) / max(n, 1))
