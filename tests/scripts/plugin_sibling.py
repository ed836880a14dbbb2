"""Loads a library whose plugin is found only through that library's own RUNPATH `$ORIGIN`,
and checks an RTLD_DEFAULT look-up from it: both must behave as untraced.

argv: HOST_LIBRARY [wait]. With `wait`, prints "ready" and waits for a line on stdin first
(so that an attach can happen before the loads)."""
import ctypes
import sys

if len(sys.argv) > 2 and sys.argv[2] == "wait":
    print("ready", flush=True)
    sys.stdin.readline()

host = ctypes.CDLL(sys.argv[1])
print("plugin", host.host_load_plugin(), flush=True)
print("default", host.host_has_default_symbol(b"host_load_plugin"), flush=True)
