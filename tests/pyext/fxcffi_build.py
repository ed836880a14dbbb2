"""Builds `fxcffi`, a cffi API-mode module over the fixture library (`set_source` + `compile`).

Usage: python fxcffi_build.py SRC_DIR LIB_DIR OUT_DIR
"""
import os
import sys

import cffi

src, lib, out = sys.argv[1:4]
ffibuilder = cffi.FFI()
ffibuilder.cdef(
    """
    int fx_add_int(int a, int b);
    void fx_spin_ns(uint64_t ns);
    int fx_add3(int a, int b, int c);
    double fx_sum(const double *xs, size_t n);
    """
)
ffibuilder.set_source(
    "fxcffi",
    '#include "fxtarget.h"',
    include_dirs=[src],
    libraries=["ffifixture"],
    library_dirs=[lib],
    runtime_library_dirs=[lib],
)
built = ffibuilder.compile(tmpdir=os.path.join(out, "cffi-build"))
os.replace(built, os.path.join(out, os.path.basename(built)))
