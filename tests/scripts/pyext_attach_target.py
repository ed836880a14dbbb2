"""A long-running target for `ffiprof attach --lib`: imports the extension fixtures (and makes
a cffi API-mode lib function) before printing "ready", then calls them in rounds until STOP_FILE
exists, and prints "done ROUNDS" and whether each function's def and vectorcall pointers
(PyCFunctionObject.m_ml, .vectorcall) are what they were before: "restored True" once every
session has detached.

Usage: pyext_attach_target.py STOP_FILE   (PYTHONPATH holds the venv's fixture directory)
"""
import ctypes
import os
import sys
import time

import fxcffi
import fxcy
import fxext
import fxpb

stop_file = sys.argv[1]
fxcffi.lib.fx_add_int(1, 2)  # made before attach
functions = [fxext.add_int, fxcffi.lib.fx_add_int, fxcy.add_int, fxpb.add_int]


def pointers():
    # m_ml at 16 and vectorcall at 48 of PyCFunctionObject (a cyfunction starts with one).
    return [ctypes.c_void_p.from_address(id(f) + off).value for f in functions for off in (16, 48)]


before = pointers()
print("ready", flush=True)
rounds = 0
while not os.path.exists(stop_file):
    for _ in range(100):
        fxext.add_int(rounds, 1)
        fxcffi.lib.fx_add_int(rounds, 2)
        fxcy.add_int(rounds, 3)
        fxpb.add_int(rounds, 4)
    rounds += 1
    time.sleep(0.001)
print("done", rounds, flush=True)
print("restored", pointers() == before, flush=True)
