"""Two call sites in a loop with known counts, inside a function. Prints the two lines.

Usage: py_sites.py FIXTURE_LIB
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int


def work():
    for i in range(500):
        lib.fx_add_int(i, 1)  # SITE-A: 500 calls
        if i % 5 == 0:
            lib.fx_add_int(i, 2)  # SITE-B: 100 calls


work()
lines = open(__file__).read().splitlines()
print(*[n + 1 for n, l in enumerate(lines) if "# SITE-" in l])
