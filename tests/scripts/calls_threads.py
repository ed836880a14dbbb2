"""THREADS threads each call fx_add_int CALLS times. Usage: calls_threads.py FIXTURE_LIB THREADS CALLS"""
import ctypes
import sys
import threading

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
threads, calls = int(sys.argv[2]), int(sys.argv[3])


def work():
    f = lib.fx_add_int
    for i in range(calls):
        f(i, 1)


ts = [threading.Thread(target=work) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("ok")
