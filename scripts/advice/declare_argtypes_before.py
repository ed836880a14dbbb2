"""declare-argtypes, before: a program that declares no argtypes, passing Python ints to an int
function (correct: the C parameters are int). The advice's time side is the measured change of
declaring, usually a cost; this pair checks its sign and size."""
import ctypes
import time

from advice_common import emit, library_path

ITERATIONS = 300_000
lib = ctypes.CDLL(library_path("libffifixture.so"))
t0 = time.perf_counter_ns()
total = 0
for i in range(ITERATIONS):
    total += lib.fx_add_int(i & 0xFFFF, 3)
emit(time.perf_counter_ns() - t0, total)
