"""Construction through ctypes' Python helper vs the same buffer built directly, alternating, each
passed fresh to fx_strlen from its own line.

Usage: py_helpers.py FIXTURE_LIB   (prints the helper line, the direct line, and the minor version)
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_strlen.argtypes = [ctypes.c_char_p]
lib.fx_strlen.restype = ctypes.c_size_t

SIZE = 4096
ROUNDS = 300
here = sys._getframe()
for i in range(ROUNDS):
    a = ctypes.create_string_buffer(SIZE)
    line_helper = here.f_lineno + 1
    lib.fx_strlen(a)
    b = (ctypes.c_char * SIZE)()
    line_direct = here.f_lineno + 1
    lib.fx_strlen(b)
print(line_helper, line_direct, sys.version_info[1])
