"""An attach target calling libfxnative through fxext, driven line by line on stdin.

native_attach.py FXEXT_DIR LIBFXNATIVE: prints "ready PID", then for each command line:
  call N   -> N calls of fxn_add, then "done"
  check    -> "thunk" when fxext's `&fxn_add` is not the function (a GOT entry patched), else "real"
  hold NS  -> a thread spinning NS ns inside fxn_spin_ns (GIL released), then "holding"
  join     -> waits for that thread, then "joined"
  quit     -> exits 0"""
import ctypes
import os
import queue
import sys
import threading

sys.path.insert(0, sys.argv[1])
import fxext  # noqa: E402

real = ctypes.cast(ctypes.CDLL(sys.argv[2]).fxn_add, ctypes.c_void_p).value
held = None
# Lines arrive on a thread of their own: the main thread keeps running bytecode (a timed wait
# returns to the interpreter every 10 ms), so that attach's pending call runs.
lines = queue.Queue()
threading.Thread(target=lambda: [lines.put(x) for x in sys.stdin], daemon=True).start()
print("ready", os.getpid(), flush=True)
while True:
    try:
        line = lines.get(timeout=0.01)
    except queue.Empty:
        continue
    cmd, *arg = line.split()
    if cmd == "call":
        n = int(arg[0])
        assert fxext.add_loop(n) == sum(range(n)) + n
        print("done", flush=True)
    elif cmd == "check":
        print("real" if fxext.taken_address() == real else "thunk", flush=True)
    elif cmd == "hold":
        held = threading.Thread(target=fxext.hold, args=(int(arg[0]),))
        held.start()
        print("holding", flush=True)
    elif cmd == "join":
        held.join()
        print("joined", flush=True)
    elif cmd == "quit":
        break
