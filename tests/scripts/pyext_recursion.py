"""A builtin called again, at the same line, from inside its own call: rec() calls
fxext.add_then_call(rec, n), which calls fx_add_int and then rec(n - 1) — so each inner call
repeats the thread's last call while that call is still running.

Usage: pyext_recursion.py ROUNDS DEPTH   (PYTHONPATH holds the venv's fixture directory)
"""
import sys

import fxext


def rec(n):
    return fxext.add_then_call(rec, n)  # SITE rec


rounds, depth = int(sys.argv[1]), int(sys.argv[2])
total = 0
for _ in range(rounds):
    total += rec(depth)
print("total", total)
