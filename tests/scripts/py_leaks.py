"""Pointer flow (issue 13): objects made by one function and retired by another, whatever their
names. Prints one JSON line of what the library saw.

  leak    2000 objects leased (1500 at LEASE_A, 500 at LEASE_B), each touched, 200 of LEASE_A's
          returned: 1800 stay out (1300 from LEASE_A, 500 from LEASE_B).
  all     the same 2000 leased and touched, every one returned.
  reuse   1000 times: spawn, touch, reap (malloc hands the freed address out again); then 50
          spawned (KEEP) and never reaped.
  trunc   fx_handle_make called with no restype (its pointer read as c_int), the result passed
          back 5 times to fx_handle_check, whose argtypes say c_void_p.
  cffi    fx_lease / fx_return through cffi in ABI mode: 300 leased (CFFI_LEASE), 100 returned.
  loop    prints "ready", then until the file argv[3] exists: two leased (LOOP_LEASE), the first
          returned at once (malloc hands its address out again), the second kept.

Usage: py_leaks.py FIXTURE_LIB MODE [STOP_FILE]
"""
import ctypes
import json
import sys

lib = ctypes.CDLL(sys.argv[1])
mode = sys.argv[2]
for name in ("fx_lease", "fx_spawn"):
    getattr(lib, name).restype = ctypes.c_void_p
    getattr(lib, name).argtypes = []
for name in ("fx_return", "fx_touch", "fx_reap"):
    getattr(lib, name).argtypes = [ctypes.c_void_p]
    getattr(lib, name).restype = None
lib.fx_leased_count.restype = ctypes.c_long

if mode in ("leak", "all"):
    a = [lib.fx_lease() for _ in range(1500)]  # LEASE_A
    b = [lib.fx_lease() for _ in range(500)]  # LEASE_B
    for o in a + b:
        lib.fx_touch(o)
    for o in a[:200] if mode == "leak" else a + b:
        lib.fx_return(o)
    print(json.dumps({"out": lib.fx_leased_count()}))
elif mode == "reuse":
    for _ in range(1000):
        o = lib.fx_spawn()
        lib.fx_touch(o)
        lib.fx_reap(o)
    keep = [lib.fx_spawn() for _ in range(50)]  # KEEP
    print(json.dumps({"kept": len(keep)}))
elif mode == "trunc":
    lib.fx_handle_check.argtypes = [ctypes.c_void_p]
    lib.fx_handle_check.restype = ctypes.c_int
    h = lib.fx_handle_make()  # no restype: read as c_int
    ok = [lib.fx_handle_check(h) for _ in range(5)]
    print(json.dumps({"handle": h, "ok": ok}))
elif mode == "cffi":
    # The same lease/return pair through cffi in ABI mode: 300 leased, 100 returned.
    import cffi

    ffi = cffi.FFI()
    ffi.cdef("void *fx_lease(void); void fx_return(void *p); long fx_leased_count(void);")
    clib = ffi.dlopen(sys.argv[1])
    objs = [clib.fx_lease() for _ in range(300)]  # CFFI_LEASE
    for o in objs[:100]:
        clib.fx_return(o)
    print(json.dumps({"out": clib.fx_leased_count()}))
elif mode == "loop":
    import os
    import time

    keep = []
    print("ready", flush=True)
    while not os.path.exists(sys.argv[3]):
        a, b = lib.fx_lease(), lib.fx_lease()  # LOOP_LEASE
        lib.fx_return(a)
        keep.append(b)
        time.sleep(0.0002)
    print(json.dumps({"kept": len(keep)}))
