"""Echoes stdin to stdout in upper case, writes to stderr, calls C once, exits with status 7."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
data = sys.stdin.read()
sys.stdout.write(data.upper())
sys.stderr.write("to stderr\n")
lib.fx_noop()
sys.exit(7)
