"""The trivial call of the overhead benchmark: libm's fabs(1.0) through ctypes, argtypes set; or,
with a second argument, libm's fma(1.0, 2.0, 3.0) (`float3`: three double arguments, what ctypes
marshals most often), or libm's frexp(1.0, &e) with e passed as byref(e), pointer(e) or a
one-element array — the ways a pointer argument reaches C; `rotate` passes sixteen one-element
arrays in turn (a pointer argument whose value changes from call to call).

Usage: trivial_loop.py CALLS [float|float3|byref|pointer|array|rotate]   (prints ns per call of the loop alone)
"""
import ctypes
import sys
import time

libm = ctypes.CDLL("libm.so.6")
n = int(sys.argv[1])
kind = sys.argv[2] if len(sys.argv) > 2 else "float"
if kind == "float":
    f = libm.fabs
    f.argtypes = [ctypes.c_double]
    f.restype = ctypes.c_double
    t0 = time.perf_counter_ns()
    for _ in range(n):
        f(1.0)
    t1 = time.perf_counter_ns()
elif kind == "float3":
    f = libm.fma
    f.argtypes = [ctypes.c_double] * 3
    f.restype = ctypes.c_double
    t0 = time.perf_counter_ns()
    for _ in range(n):
        f(1.0, 2.0, 3.0)
    t1 = time.perf_counter_ns()
elif kind == "rotate":
    f = libm.frexp
    f.argtypes = [ctypes.c_double, ctypes.POINTER(ctypes.c_int)]
    f.restype = ctypes.c_double
    arrays = [(ctypes.c_int * 1)() for _ in range(16)]
    t0 = time.perf_counter_ns()
    for i in range(n):
        f(1.0, arrays[i & 15])
    t1 = time.perf_counter_ns()
else:
    f = libm.frexp
    f.argtypes = [ctypes.c_double, ctypes.POINTER(ctypes.c_int)]
    f.restype = ctypes.c_double
    e = ctypes.c_int()
    arg = {"byref": ctypes.byref(e), "pointer": ctypes.pointer(e), "array": (ctypes.c_int * 1)()}[kind]
    t0 = time.perf_counter_ns()
    for _ in range(n):
        f(1.0, arg)
    t1 = time.perf_counter_ns()
print((t1 - t0) / max(n, 1))
