"""Prints what a program can observe of its own process, after making foreign calls (so that
everything a profiler does at the first call has happened): every signal's Python-level handler,
its file descriptors, and whether a signal it blocked and waits for reaches it.

Usage: harm_observe.py FIXTURE_LIB
"""
import ctypes
import os
import signal
import sys
import threading

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
for i in range(100):
    lib.fx_add_int(i, 1)


def describe(h):
    if h is None:
        return "None"
    if h in (signal.SIG_DFL, signal.SIG_IGN):
        return str(int(h))
    return getattr(h, "__name__", repr(h))


for s in range(1, signal.NSIG):
    try:
        print("signal", s, describe(signal.getsignal(s)))
    except (ValueError, OSError):
        pass

# The same dispositions as the C library reports them (struct sigaction on x86-64 glibc: the
# handler, a 128-byte mask of which the kernel fills 8 bytes, the flags, the restorer).
class SigAction(ctypes.Structure):
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ubyte * 128),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


libc = ctypes.CDLL(None, use_errno=True)
libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(SigAction)]
for s in range(1, signal.NSIG):
    old = SigAction()
    if libc.sigaction(s, None, ctypes.byref(old)) != 0:
        continue
    h = old.handler or 0
    kind = {0: "default", 1: "ignore"}.get(h, "handler")
    print("csig", s, kind, hex(old.flags & ~0x04000000), bytes(old.mask[:8]).hex())

fds = sorted(int(f) for f in os.listdir("/proc/self/fd"))
# The directory listing itself holds one descriptor while it reads: drop the highest.
print("fds", fds[:-1])
print("python threads", threading.active_count())

# A signal blocked in the only thread the program has, sent to the process, and waited for:
# untraced, sigwait takes it. A profiler thread that left it unblocked would die by it instead.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.kill(os.getpid(), signal.SIGUSR1)
print("sigwait", signal.sigwait({signal.SIGUSR1}) == signal.SIGUSR1, flush=True)
lib.fx_add_int(1, 1)
