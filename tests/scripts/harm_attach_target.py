"""A target for attach: prints `ready PID`, waits until the agent is attached (its thread shows
in /proc/self/task), then, while attached, loads a library whose plugin is found only through
that library's RUNPATH `$ORIGIN`, forks twice with every warning shown (CPython 3.12+ warns at
fork when it counts another OS thread), and checks a blocked signal reaches sigwait. It prints
what it saw, then `done`, and waits for a line on stdin before exiting.

Usage: harm_attach_target.py FIXTURE_LIB HOST_LIB
"""
import ctypes
import os
import signal
import sys
import time
import warnings

warnings.simplefilter("always")
lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
print("ready", os.getpid(), flush=True)


def attached():
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                if f.read().startswith("ffiprof"):
                    return True
        except OSError:
            pass
    return False


deadline = time.time() + 60
while not attached():
    lib.fx_add_int(0, 0)
    time.sleep(0.005)
    if time.time() > deadline:
        print("never attached", flush=True)
        sys.exit(1)
# Calls go through the agent's hooks from here on.
host = ctypes.CDLL(sys.argv[2])
print("plugin", host.host_load_plugin(), flush=True)
for round in range(2):
    pid = os.fork()
    if pid == 0:
        for i in range(10):
            lib.fx_add_int(i, 2)
        os._exit(0)
    os.waitpid(pid, 0)
    for i in range(100):
        lib.fx_add_int(i, 3)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.kill(os.getpid(), signal.SIGUSR1)
print("sigwait", signal.sigwait({signal.SIGUSR1}) == signal.SIGUSR1, flush=True)
print("done", flush=True)
sys.stdin.readline()
