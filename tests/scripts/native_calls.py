"""Calls libfxnative through the extension module fxext (GOT-trampoline tests).

native_calls.py FXEXT_DIR SCENARIO: imports fxext from FXEXT_DIR, runs SCENARIO, checks every
result the C functions return (registers and return values must survive the trampoline), and
prints "ok" and what the scenario counted."""
import ctypes
import os
import sys

scenario = sys.argv[2]
if scenario == "exceptions":
    # The C++ runtime loaded before any target: its unwinder entries must still be hooked when
    # the target arrives.
    ctypes.CDLL("libstdc++.so.6")

sys.path.insert(0, sys.argv[1])
import fxext  # noqa: E402

if scenario == "counts":
    assert fxext.add_loop(1000) == sum(range(1000)) + 1000
    assert fxext.outer(50) == sum(range(50))
    for _ in range(3):
        r = fxext.registers()
        assert r == (
            6.0,
            1 + 4 + 9 + 16 + 25 + 36 + 49 + 64,
            1 + 5 + 9 + 17 + 25 + 36 + 49 + 64 + 81 + 100 + 121 + 144,
            7.0,
            0.0,
            12345,
            -12345,
        ), r
    assert fxext.by_pointer(100) == 100 * 10
    print("ok")
elif scenario == "spin":
    assert fxext.add_loop(2000) == sum(range(2000)) + 2000
    fxext.spin(int(sys.argv[3]), int(sys.argv[4]))
    print("ok")
elif scenario == "exceptions":
    assert fxext.throw_catch(200) == (200, 5)
    print("ok")
elif scenario == "longjmp":
    assert fxext.jumps(100) == 200
    assert fxext.add_loop(10) == 55
    print("ok")
elif scenario == "signal":
    assert fxext.raises(50) == (350, 50, 50 * 42)
    print("ok")
elif scenario == "altstack":
    assert fxext.altstack(20) == (140, 20, 20 * 42)
    print("ok")
elif scenario == "storm":
    n = int(sys.argv[3])
    s, handled = fxext.storm(n, 50)
    assert s == sum((i & 0xFF) + 1 for i in range(n)), s
    print("ok", handled)
elif scenario == "threads":
    assert fxext.threads(8, 100000) == 800000
    print("ok")
elif scenario == "fork":
    assert fxext.add_loop(100) == sum(range(100)) + 100
    pid = os.fork()
    if pid == 0:
        assert fxext.add_loop(300) == sum(range(300)) + 300
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    assert fxext.add_loop(20) == sum(range(20)) + 20
    print("ok")
elif scenario == "mixed":
    # The same function through ctypes (libffi, counted by the ffi_call hook only: _ctypes' own
    # dlsym is never given a thunk) and through the extension's GOT.
    add = ctypes.CDLL(sys.argv[3]).fxn_add
    add.argtypes = [ctypes.c_int, ctypes.c_int]
    for i in range(7):
        assert add(i, 1) == i + 1
    assert fxext.add_loop(5) == sum(range(5)) + 5
    print("ok")
else:
    raise SystemExit(f"unknown scenario {scenario}")
