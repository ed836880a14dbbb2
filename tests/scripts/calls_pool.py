"""A multiprocessing pool whose workers call the fixture, then terminate() (SIGTERM to workers).

Usage: calls_pool.py FIXTURE_LIB [START_METHOD]   (prints the total of calls the workers made)
"""
import ctypes
import multiprocessing
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int


def work(n):
    for i in range(n):
        lib.fx_add_int(i, 1)
    return n


if __name__ == "__main__":
    if len(sys.argv) > 2:
        multiprocessing.set_start_method(sys.argv[2])
    pool = multiprocessing.Pool(2)
    total = sum(pool.map(work, [1000] * 6, chunksize=1))
    pool.terminate()
    pool.join()
    print(total)
