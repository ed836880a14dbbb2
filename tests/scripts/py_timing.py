"""Calibrated native times: functions that spin 1, 10 and 100 µs, and an empty one. Prints the
median duration of each spin function's calls as the function measured itself (the truth).

Usage: py_timing.py FIXTURE_LIB
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
for name in ("fx_spin_1us", "fx_spin_10us", "fx_spin_100us", "fx_noop"):
    f = getattr(lib, name)
    f.argtypes = []
    f.restype = None
for i in range(2000):
    lib.fx_spin_1us()
for i in range(500):
    lib.fx_spin_10us()
for i in range(100):
    lib.fx_spin_100us()
for i in range(50000):
    lib.fx_noop()
lib.fx_spin_self_median.argtypes = [ctypes.c_int]
lib.fx_spin_self_median.restype = ctypes.c_uint64
print(*[lib.fx_spin_self_median(which) for which in (1, 10, 100)])
