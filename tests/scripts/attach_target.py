"""A long-running Python process for the attach tests.

usage: attach_target.py MODE STOP_FILE [LIBRARY]

With LIBRARY (the C fixture) the calls go to its fx_add_int, else to libc's labs. In busy and
cffi modes it also prints "tick UNIX_NS CALLS PATCHED" every ATTACH_TICK_SECS (default 0.05), so
a test can tell how many calls it made in any window; PATCHED is 1 while any of the type slots a
profiler's Python layer replaces differs from its value at start-up, else 0. When the file named
by ATTACH_HOLD_FILE appears, a busy target removes it and sleeps as many seconds as it says in a
C call that keeps the GIL, printing "holding NS" and "released NS" around it.

MODE is busy (main thread calls a C function in a loop), cffi (the same through cffi's ABI mode,
needs LIBRARY), sleep (mostly time.sleep), ccall (blocked in 2-second C calls), threads (4
threads calling C, main thread idle), alloc (heavy malloc/free with big blocks that go through
mmap) or exit-soon (a helper thread ends the process after 0.3 s while the main thread is blocked
in C). It prints "ready" once working, runs until STOP_FILE exists, checks its own results, and
prints "done CALLS LEAKED SLOTS" where LEAKED lists any names an injection left in __main__ and
SLOTS is "intact" when every watched type slot holds its start-up value again.
"""

import ctypes
import os
import sys
import threading
import time

mode, stop_file = sys.argv[1], sys.argv[2]
lib = ctypes.CDLL(sys.argv[3] if len(sys.argv) > 3 else None)
libc = ctypes.CDLL(None)
if hasattr(lib, "fx_add_int"):
    _add = lib.fx_add_int
    _add.argtypes = [ctypes.c_int, ctypes.c_int]
    _add.restype = ctypes.c_int

    def labs(v):
        return _add(-v, 0)

else:
    labs = libc.labs
    labs.argtypes = [ctypes.c_long]
    labs.restype = ctypes.c_long
usleep = libc.usleep
usleep.argtypes = [ctypes.c_uint]
calls = [0]
lock = threading.Lock()
tick_secs = float(os.environ.get("ATTACH_TICK_SECS", "0.05"))

if mode == "cffi":
    import cffi

    ffi = cffi.FFI()
    ffi.cdef("int fx_add_int(int, int);")
    clib = ffi.dlopen(sys.argv[3])
    _cadd = clib.fx_add_int

    def labs(v):
        return _cadd(-v, 0)


def _word(addr):
    return ctypes.c_void_p.from_address(addr).value or 0


# What a profiler's Python layer replaces: tp_call (offset 128 in PyTypeObject, 3.8-3.13) of
# ctypes' function-pointer types and metaclasses, and the wrapped function (offset 48) of
# CFuncPtr.__call__, which later subclasses copy; with cffi, tp_call of its cdata types.
_watched_types = [
    ctypes._CFuncPtr,
    type(libc.labs),
    ctypes.CFUNCTYPE(ctypes.c_int),
    type(ctypes.c_int),
    type(ctypes.c_int * 1),
    type(ctypes.Structure),
    type(ctypes.Union),
]
if mode == "cffi":
    _owned = ffi.new("int *")
    _watched_types += [type(_cadd), type(_owned)]


def watched_slots():
    vals = [_word(id(t) + 128) for t in _watched_types]
    vals.append(_word(id(ctypes._CFuncPtr.__dict__["__call__"]) + 48))
    return vals


initial_slots = watched_slots()


def stopped():
    return os.path.exists(stop_file)


def check_block(n=1000):
    """C calls and float arithmetic whose results are known: a clobbered register shows here."""
    acc = 0
    x = 0.0
    for i in range(n):
        acc += labs(-i)
        x += i * 0.5
    assert acc == n * (n - 1) // 2, acc
    assert x == 0.25 * n * (n - 1), x
    return n


hold_file = os.environ.get("ATTACH_HOLD_FILE")
# usleep called through PyDLL keeps the GIL for the whole sleep (a C extension that never
# releases it).
gil_usleep = ctypes.PyDLL(None).usleep
gil_usleep.argtypes = [ctypes.c_uint]


def busy(ticks=False):
    last = time.monotonic()
    while not stopped():
        if hold_file and os.path.exists(hold_file):
            secs = float(open(hold_file).read() or "1")
            os.remove(hold_file)
            print("holding", time.time_ns(), flush=True)
            gil_usleep(int(secs * 1e6))
            print("released", time.time_ns(), flush=True)
        done = check_block()
        with lock:
            calls[0] += done
        if ticks and time.monotonic() - last >= tick_secs:
            last = time.monotonic()
            patched = int(watched_slots() != initial_slots)
            print("tick", time.time_ns(), calls[0], patched, flush=True)


def allocate():
    blocks = []
    while not stopped():
        for size in (1 << 20, 300_000, 4096, 150_000, 2 << 20):
            blocks.append(bytearray(size))
        if len(blocks) > 40:
            del blocks[:25]
        with lock:
            calls[0] += check_block(50)


def exit_soon():
    time.sleep(0.3)
    sys.stdout.write("exiting\n")
    sys.stdout.flush()
    os._exit(0)


def wait_for(threads):
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)


print("ready", flush=True)
if mode == "busy":
    busy(ticks=len(sys.argv) > 3)
elif mode == "cffi":
    busy(ticks=True)
elif mode == "sleep":
    while not stopped():
        time.sleep(0.05)
        calls[0] += check_block(10)
elif mode == "ccall":
    while not stopped():
        usleep(2_000_000)
        calls[0] += check_block(10)
elif mode == "threads":
    workers = [threading.Thread(target=busy) for _ in range(4)]
    for w in workers:
        w.start()
    wait_for(workers)
elif mode == "alloc":
    workers = [threading.Thread(target=allocate) for _ in range(2)]
    for w in workers:
        w.start()
    allocate()
    wait_for(workers)
elif mode == "exit-soon":
    threading.Thread(target=exit_soon, daemon=True).start()
    usleep(5_000_000)
else:
    sys.exit("unknown mode " + mode)

leaked = sorted(k for k in globals() if "ffiprof" in k or k in ("_report", "_dir", "_page", "result"))
slots = "intact" if watched_slots() == initial_slots else "changed"
print("done", calls[0], ",".join(leaked) or "-", slots, flush=True)
