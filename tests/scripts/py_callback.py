"""qsort with a Python comparator that makes its own foreign calls.

Usage: py_callback.py FIXTURE_LIB   (prints: comparator-calls sort-line compare-line)
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
lib.fx_sort_ints.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_size_t, CMP]
lib.fx_sort_ints.restype = None
calls = 0


def compare(a, b):
    global calls
    calls += 1
    return lib.fx_add_int(a[0], -b[0])  # COMPARE


values = (ctypes.c_int * 50)(*[(i * 37) % 50 for i in range(50)])
lib.fx_sort_ints(values, 50, CMP(compare))  # SORT
assert list(values) == sorted(values)
lines = open(__file__).read().splitlines()
line = {tag: n + 1 for n, l in enumerate(lines) for tag in ("# SORT", "# COMPARE") if l.rstrip().endswith(tag)}
print(calls, line["# SORT"], line["# COMPARE"])
