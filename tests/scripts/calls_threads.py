"""THREADS threads each call fx_add_int CALLS times; with MAIN_CALLS, the main thread first calls it
that many times and fx_scale as many (the only thread to call that one).
Usage: calls_threads.py FIXTURE_LIB THREADS CALLS [MAIN_CALLS]"""
import ctypes
import sys
import threading

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
lib.fx_scale.argtypes = [ctypes.c_double]
lib.fx_scale.restype = ctypes.c_double
threads, calls = int(sys.argv[2]), int(sys.argv[3])
main_calls = int(sys.argv[4]) if len(sys.argv) > 4 else 0


# All alive at once, from before their first call to after their last: a thread started after
# another ended could be given its thread pointer, and be counted with it.
together = threading.Barrier(threads)


def work():
    f = lib.fx_add_int
    together.wait()
    for i in range(calls):
        f(i, 1)
    together.wait()


for i in range(main_calls):
    lib.fx_add_int(i, 1)
    lib.fx_scale(1.5)

ts = [threading.Thread(target=work) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("ok")
