"""Buffer bytes and construction bytes with known sizes.

Usage: py_bytes.py FIXTURE_LIB   (prints `numpy` when the numpy case ran)
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])


class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("id", ctypes.c_int32)]


lib.fx_sum.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
lib.fx_sum.restype = ctypes.c_double
lib.fx_strlen.argtypes = [ctypes.c_char_p]
lib.fx_strlen.restype = ctypes.c_size_t
lib.fx_point_norm2_ptr.argtypes = [ctypes.POINTER(Point)]
lib.fx_point_norm2_ptr.restype = ctypes.c_double
lib.fx_fill.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_double]
lib.fx_fill.restype = None

reused = (ctypes.c_double * 100)(*range(100))  # built once: 800 bytes
for i in range(30):
    lib.fx_sum(reused, 100)                    # 30 x 800 buffer bytes, not fresh
for i in range(10):
    fresh = (ctypes.c_double * 1000)(*range(1000))
    lib.fx_sum(fresh, 1000)                    # 10 x 8000 buffer and construction bytes, fresh
for i in range(10):
    lib.fx_strlen(b"hello")                    # 10 x 5
pt = Point(3.0, 4.0, 1)
for i in range(7):
    lib.fx_point_norm2_ptr(ctypes.byref(pt))   # 7 x 24
buf = bytearray(64)
for i in range(3):
    lib.fx_fill((ctypes.c_char * 64).from_buffer(buf), 8, 1.0)  # 3 x 64, built from a buffer
try:
    import numpy as np
except ImportError:
    np = None
if np is not None:
    a = np.ones(50)
    for i in range(4):
        lib.fx_sum(a.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 50)  # 4 x 400
    for i in range(2):
        lib.fx_fill(a.ctypes, 50, 1.0)  # a.ctypes as a c_void_p (_as_parameter_): 2 x 400
    print("numpy")
else:
    print("no numpy")
