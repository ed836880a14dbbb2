"""How the objects built afresh for each call were built (the site records' fresh_buffer_builds):
an instance of a type made before the loop (INSTANCE), the array type made per call (TYPE),
create_string_buffer (HELPER), 20 calls each. tests/e2e_advice.rs asserts each site's exactly.

Usage: py_fresh_builds.py FIXTURE_LIB
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_strlen.argtypes = [ctypes.c_char_p]
lib.fx_strlen.restype = ctypes.c_size_t
T = ctypes.c_char * 64
for i in range(20):
    lib.fx_strlen(T())  # INSTANCE
for i in range(20):
    lib.fx_strlen((ctypes.c_char * 64)())  # TYPE
for i in range(20):
    lib.fx_strlen(ctypes.create_string_buffer(64))  # HELPER
