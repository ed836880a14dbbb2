# cython: language_level=3
"""A Cython module over the fixture library: module functions (cyfunctions) and a cdef class's
method."""
from libc.stdint cimport uint64_t

cdef extern from "fxtarget.h":
    int fx_add_int(int a, int b)
    void fx_spin_ns(uint64_t ns)
    int fx_add3(int a, int b, int c)


def add_int(int a, int b):
    return fx_add_int(a, b)


def spin_ns(uint64_t ns):
    fx_spin_ns(ns)


def add3(int a, int b, int c):
    return fx_add3(a, b, c)


cdef class Acc:
    cdef public int total

    def add(self, int x):
        self.total = fx_add_int(self.total, x)
        return self.total
