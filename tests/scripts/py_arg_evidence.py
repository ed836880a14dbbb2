"""What ctypes' guessing was given, per site (the profile's arg_types & co.). Each LABEL is the
comment of its line; tests/e2e_advice.rs asserts each site's evidence exactly.

- INTS: fx_add_int(i, 1), 20 calls, no argtypes, no restype: looked at on calls 1-8 and 16.
- WIDE: fx_add_i64(x, 1), x = 2**40 then 3: the first is cut to 32 bits (argument 0).
- MIXED: fx_strlen given bytes, a c_char array, byref(c_int), a str — one each, twice over.
- STRUCT: fx_point_norm2(Point(...)) with restype = c_double only: a ctypes instance, restype declared.
- ARGTYPES_ONLY: fx_add_int with argtypes declared and the default restype: nothing guessed.
- NULL: fx_add_int(None, 2), once — None passes as a NULL pointer.

Usage: py_arg_evidence.py FIXTURE_LIB
"""
import ctypes
import sys

path = sys.argv[1]
lib = ctypes.CDLL(path)
for i in range(20):
    lib.fx_add_int(i, 1)  # INTS
for x in (2**40, 3):
    lib.fx_add_i64(x, 1)  # WIDE
buf = ctypes.create_string_buffer(b"abc", 8)
e = ctypes.c_int(0)
for arg in (b"hello", buf, ctypes.byref(e), "x") * 2:
    lib.fx_strlen(arg)  # MIXED


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("id", ctypes.c_int)]


norm = ctypes.CDLL(path).fx_point_norm2
norm.restype = ctypes.c_double
for i in range(3):
    norm(Point(1.0, 2.0, i))  # STRUCT
declared = ctypes.CDLL(path).fx_add_int
declared.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(5):
    declared(i, 2)  # ARGTYPES_ONLY
lib.fx_add_int(None, 2)  # NULL
