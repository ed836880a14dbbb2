"""Calls the fixture library through ctypes with several signatures, a known number of times each.

Usage: calls_basic.py FIXTURE_LIB   (prints one line: ok)
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("id", ctypes.c_int32)]


lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
lib.fx_scale.argtypes = [ctypes.c_double]
lib.fx_scale.restype = ctypes.c_double
lib.fx_sum.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
lib.fx_sum.restype = ctypes.c_double
lib.fx_point_norm2.argtypes = [Point]
lib.fx_point_norm2.restype = ctypes.c_double
lib.fx_strdup_upper.argtypes = [ctypes.c_char_p]
lib.fx_strdup_upper.restype = ctypes.c_void_p
lib.fx_free.argtypes = [ctypes.c_void_p]
lib.fx_free.restype = None

for i in range(1000):
    assert lib.fx_add_int(i, 1) == i + 1
for i in range(500):
    lib.fx_scale(float(i))
arr = (ctypes.c_double * 100)(*range(100))
for i in range(30):
    assert lib.fx_sum(arr, 100) == 4950.0
for i in range(20):
    assert lib.fx_point_norm2(Point(3.0, 4.0, i)) == 25.0
for i in range(7):
    p = lib.fx_strdup_upper(b"hello")
    assert ctypes.string_at(p) == b"HELLO"
    lib.fx_free(p)
libc = ctypes.CDLL("libc.so.6")
for i in range(3):
    assert libc.labs(-5) == 5
print("ok")
