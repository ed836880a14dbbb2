"""What counts as declared: fx_add_int called 10 times with no argtypes and no restype (UNDECLARED),
20 times through another handle with argtypes and restype = c_int set explicitly (EXPLICIT), 5 times
through a CFUNCTYPE(c_int, c_int, c_int) prototype (PROTOTYPE); fx_noop 4 times with restype = c_int
and argtypes = [] set (NOOP); fx_strlen 7 times with neither, given a bytes object (STRLEN).

Usage: py_declarations.py FIXTURE_LIB
"""
import ctypes
import sys

path = sys.argv[1]
lib = ctypes.CDLL(path)
for i in range(10):
    lib.fx_add_int(i, 1)  # UNDECLARED
declared = ctypes.CDLL(path)
declared.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
declared.fx_add_int.restype = ctypes.c_int
for i in range(20):
    declared.fx_add_int(i, 2)  # EXPLICIT
proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)(("fx_add_int", lib))
for i in range(5):
    proto(i, 3)  # PROTOTYPE
declared.fx_noop.argtypes = []
declared.fx_noop.restype = ctypes.c_int
for i in range(4):
    declared.fx_noop()  # NOOP
for i in range(7):
    lib.fx_strlen(b"hello")  # STRLEN
