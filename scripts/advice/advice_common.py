"""Shared by the advice-validation workloads: loading the C libraries with their prototypes, and
reporting the timed work section to scripts/validate-advice.

Before and after scripts of a pair declare the same prototypes here, so the only difference between
them is the change the advice describes.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SOURCES = {
    "libffifixture.so": os.path.join(ROOT, "tests", "fixture", "ffifixture.c"),
    "libadvice.so": os.path.join(HERE, "advice_lib.c"),
}


def library_path(name):
    """The library built by validate-advice (FFIPROF_ADVICE_LIBDIR), or one built here on first use."""
    libdir = os.environ.get("FFIPROF_ADVICE_LIBDIR")
    if not libdir:
        libdir = os.path.join(tempfile.gettempdir(), "ffiprof-advice-%d" % os.getuid())
        os.makedirs(libdir, mode=0o700, exist_ok=True)
    path = os.path.join(libdir, name)
    if not os.path.exists(path):
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", path, SOURCES[name]], check=True)
    return path


def fixture(loader=ctypes.CDLL):
    lib = loader(library_path("libffifixture.so"))
    d, p_d, size = ctypes.c_double, ctypes.POINTER(ctypes.c_double), ctypes.c_size_t
    lib.fx_scale.argtypes, lib.fx_scale.restype = [d], d
    lib.fx_sum.argtypes, lib.fx_sum.restype = [p_d, size], d
    lib.fx_fill.argtypes, lib.fx_fill.restype = [p_d, size, d], None
    return lib


def advice_lib():
    lib = ctypes.CDLL(library_path("libadvice.so"))
    d, p_d, size = ctypes.c_double, ctypes.POINTER(ctypes.c_double), ctypes.c_size_t
    lib.adv_scale.argtypes, lib.adv_scale.restype = [d, d], d
    lib.adv_scale_many.argtypes, lib.adv_scale_many.restype = [p_d, p_d, size, d], None
    lib.adv_fill_bytes.argtypes = [ctypes.c_char_p, size, ctypes.c_uint64]
    lib.adv_fill_bytes.restype = ctypes.c_uint64
    return lib


def objects_lib():
    """libadvice.so's object makers and releasers (the leak pairs), declared."""
    lib = ctypes.CDLL(library_path("libadvice.so"))
    for make, release in (("adv_obj_new", "adv_obj_free"), ("adv_lease", "adv_return")):
        getattr(lib, make).argtypes, getattr(lib, make).restype = [], ctypes.c_void_p
        getattr(lib, release).argtypes, getattr(lib, release).restype = [ctypes.c_void_p], None
    lib.adv_live_objects.argtypes, lib.adv_live_objects.restype = [], ctypes.c_long
    return lib


def emit(work_ns, result, **extra):
    """One JSON line on stdout: the work section's duration and a result before/after must agree on
    (and any other figure a pair compares, such as the objects left alive)."""
    sys.stdout.write(json.dumps(dict({"work_ns": work_ns, "result": result}, **extra)) + "\n")
