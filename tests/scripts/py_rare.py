"""A rare slow function beside a hot one: fx_spin_ns(200 µs) called 3 times from one line (RARE)
while fx_spin_1us is called 10 000 times (HOT); then fx_spin_ns from another line (WARM) 3 times
at 200 µs followed by 61 calls that return at once (few, so that a sampled one is almost never
preempted, which sampling would count 8 times). Each slow call is also timed here, around the
whole Python call, which bounds its native time from above.

Usage: py_rare.py FIXTURE_LIB
Prints: the RARE calls' total ns, the WARM slow calls' total ns, fx_spin_1us's median ns as it
measured itself, and the lines of RARE, HOT and WARM.
"""
import ctypes
import sys
import time

lib = ctypes.CDLL(sys.argv[1])
lib.fx_spin_ns.argtypes = [ctypes.c_uint64]
lib.fx_spin_ns.restype = None
lib.fx_spin_1us.argtypes = []
lib.fx_spin_1us.restype = None
now = time.perf_counter_ns

rare = 0
for i in range(10_000):
    if i in (0, 5_000, 9_999):
        t0 = now(); lib.fx_spin_ns(200_000); rare += now() - t0  # RARE
    lib.fx_spin_1us()  # HOT
warm = 0
for i in range(64):
    ns = 200_000 if i < 3 else 0
    t0 = now(); lib.fx_spin_ns(ns); d = now() - t0  # WARM
    warm += d if i < 3 else 0
lib.fx_spin_self_median.argtypes = [ctypes.c_int]
lib.fx_spin_self_median.restype = ctypes.c_uint64
lines = {tag: n + 1 for n, l in enumerate(open(__file__).read().splitlines())
         for tag in ("RARE", "HOT", "WARM") if l.endswith("# " + tag)}
print(rare, warm, lib.fx_spin_self_median(1), lines["RARE"], lines["HOT"], lines["WARM"])
