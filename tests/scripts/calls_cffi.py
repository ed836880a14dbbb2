"""Calls the fixture through cffi in ABI mode (ffi.dlopen). Usage: calls_cffi.py FIXTURE_LIB"""
import sys

import cffi

ffi = cffi.FFI()
ffi.cdef("int fx_add_int(int a, int b); double fx_scale(double x); double fx_sum(const double *xs, size_t n);")
lib = ffi.dlopen(sys.argv[1])
for i in range(300):
    assert lib.fx_add_int(i, 2) == i + 2
for i in range(40):
    lib.fx_scale(1.5)
buf = ffi.new("double[]", [1.0] * 10)
for i in range(5):
    assert lib.fx_sum(buf, 10) == 10.0
print("ok")
