"""leak (verbs of its own), before: objects leased with adv_lease, one in ten given back with
adv_return. No word list pairs lease/return: the pair is found from pointer flow (issue 13 item 1)."""
import time

from advice_common import emit, objects_lib

N = 2_000
lib = objects_lib()
t0 = time.perf_counter_ns()
made = [lib.adv_lease() for _ in range(N)]
for obj in made[: N // 10]:
    lib.adv_return(obj)
emit(time.perf_counter_ns() - t0, N, live=lib.adv_live_objects())
