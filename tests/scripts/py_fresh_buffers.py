"""A loop that builds a new ctypes array for every call: fx_fill on a fresh (c_double * 512)()
20 000 times, from one line.

Usage: py_fresh_buffers.py FIXTURE_LIB
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_fill.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_size_t, ctypes.c_double]
lib.fx_fill.restype = None
Array = ctypes.c_double * 512
total = 0.0
for i in range(20_000):
    buf = Array()
    lib.fx_fill(buf, 512, float(i))
    total += buf[i % 512]
print(total)
