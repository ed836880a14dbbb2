"""ctypes' own foreign calls next to a library call: `ctypes.cast` 200 times, each result passed to
the fixture's fx_sum, and `ctypes.string_at` 150 times. Prints TAG=LINE for each tagged line.

Usage: py_ctypes_internal.py FIXTURE_LIB
"""
import ctypes
import re
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_sum.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
lib.fx_sum.restype = ctypes.c_double
values = (ctypes.c_double * 4)(1.0, 2.0, 3.0, 4.0)
text = ctypes.create_string_buffer(b"abcdefgh")
address = ctypes.addressof(text)


def work():
    total = 0.0
    for _ in range(200):
        p = ctypes.cast(values, ctypes.POINTER(ctypes.c_double))  # CAST: 200 calls
        total += lib.fx_sum(p, 4)  # SUM: 200 calls
    for _ in range(150):
        assert ctypes.string_at(address, 4) == b"abcd"  # STRING-AT: 150 calls
    return total


assert work() == 2000.0
tags = {}
for n, line in enumerate(open(__file__).read().splitlines()):
    m = re.search(r"  # ([A-Z][A-Z-]*)", line)
    if m:
        tags[m.group(1)] = n + 1
print(" ".join("%s=%d" % kv for kv in sorted(tags.items())))
