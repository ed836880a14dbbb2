"""Run by pytest (tests/wheel.rs) from a venv with the wheel installed: ffi_budget markers over
and within budget, and tests without a marker, which must pay nothing. FFIPROF_FIXTURE names the
C fixture library."""
import ctypes
import os
import sys

import pytest

lib = ctypes.CDLL(os.environ["FFIPROF_FIXTURE"])
lib.fx_add_int.argtypes = [ctypes.c_int, ctypes.c_int]
lib.fx_add_int.restype = ctypes.c_int
lib.fx_scale.argtypes = [ctypes.c_double]
lib.fx_scale.restype = ctypes.c_double


def agent_loaded():
    with open("/proc/self/maps") as maps:
        return any(line.rstrip().endswith("libffiprof_agent.so") for line in maps)


def test_a_no_marker_pays_nothing():
    for i in range(100):
        lib.fx_add_int(i, 1)
    # Nothing recorded it: the agent is not even loaded, nor the package's recording code.
    assert not agent_loaded()
    assert "ffiprof._agent" not in sys.modules


@pytest.mark.ffi_budget(function="fx_add*", max_calls=100)
def test_b_scalar_loop_over_budget():
    for i in range(1000):
        lib.fx_add_int(i, 1)  # SCALAR-LOOP


@pytest.mark.ffi_budget(function="fx_add*", max_calls=100, max_boundary_ms=5000)
def test_c_within_budget():
    for i in range(100):
        lib.fx_add_int(i, 1)
    for i in range(500):
        lib.fx_scale(1.0)  # not in the glob: any count


@pytest.mark.ffi_budget("fx_scale", max_boundary_ms=0)
def test_d_boundary_time_over_budget():
    for i in range(10):
        lib.fx_scale(1.0)


@pytest.mark.ffi_budget(function="fx_scale", max_marshal_share=0.0)
def test_e_marshal_share_over_budget():
    for i in range(10):
        lib.fx_scale(1.0)


def test_f_no_marker_after_marked_ones():
    from ffiprof import _agent

    # The agent stays loaded after the marked tests, but no session records this test.
    assert agent_loaded() and _agent.controller._segment is None
    for i in range(10):
        lib.fx_add_int(i, 1)
