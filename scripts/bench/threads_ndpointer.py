"""THREADS threads each call fx_sum(double *xs, size_t n) CALLS times through a numpy ndpointer
prototype (numpy checks and converts the array on every call), over one shared array.

Usage: threads_ndpointer.py FIXTURE_LIB THREADS CALLS [N]   (prints the wall seconds of the loop)
"""
import ctypes
import sys
import threading
import time

import numpy as np
from numpy.ctypeslib import ndpointer

lib = ctypes.CDLL(sys.argv[1])
threads, calls = int(sys.argv[2]), int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 64
lib.fx_sum.argtypes = [ndpointer(dtype=np.float64, ndim=1, flags="C_CONTIGUOUS"), ctypes.c_size_t]
lib.fx_sum.restype = ctypes.c_double
xs = np.ones(n)


def work():
    f = lib.fx_sum
    for _ in range(calls):
        f(xs, n)


workers = [threading.Thread(target=work) for _ in range(threads)]
t0 = time.perf_counter()
for w in workers:
    w.start()
for w in workers:
    w.join()
print(f"{time.perf_counter() - t0:.6f}")
