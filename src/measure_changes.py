"""ffiprof: times the changes the advice proposes, on this interpreter (run by `ffiprof run` and
`ffiprof attach` after the profile is written; see src/measure_changes.rs and
analyzer/src/measure.rs for what each change and shape means).

`gil-contention` is `use-pydll` with its calls shared among the threads the profile saw calling
(shape `THREADS:SIGNATURE`).

Reads {"agent": PATH, "budget_s": SECONDS, "requests": [{"change": ..., "shape": ...}, ...]} on
stdin; writes one JSON object on stdout: {"python": sys.version, "measurements": [...],
"skipped": [...], "errors": [...]}. Every loop also calls the agent's do-nothing `ffiprof_nop`
through ctypes, with the prototype of the calls the profile saw. Nothing here is traced.
"""
import array
import ctypes
import gc
import json
import sys
import threading
import time

# A block (one side of one round) lasts about this long: long against the clock's resolution and
# the loop's start-up, short against the scheduler's time slice.
BLOCK_NS = 400_000
# A block of calls made from several threads lasts this long: long against starting and joining
# them (~50 µs each), so that the two sides differ by the calls, not by the threads' start-up.
THREADED_BLOCK_NS = 1_000_000
MAX_THREADS = 8
MIN_ROUNDS = 5
MAX_ROUNDS = 201
MAX_ELEMENTS = 1 << 18

now = time.perf_counter_ns
spec = json.loads(sys.stdin.read())
AGENT = spec["agent"]
deadline = now() + int(spec["budget_s"] * 1e9)


def nop(loader=ctypes.CDLL):
    """A fresh function object for the agent's ffiprof_nop (each has its own argtypes)."""
    return loader(AGENT)["ffiprof_nop"]


CTYPE = {"i": ctypes.c_int, "d": ctypes.c_double, "P": ctypes.c_char_p}
VALUE = {"i": 7, "d": 1.5, "P": b"x"}


def parse_signature(shape):
    args, _, ret = shape.partition("->")
    if any(c not in "id" for c in args) or ret not in ("", "i", "d"):
        raise ValueError("signature %r" % shape)
    return args, ret


def declared(args, ret, loader=ctypes.CDLL):
    f = nop(loader)
    f.argtypes = [CTYPE[c] for c in args]
    f.restype = CTYPE[ret] if ret else None
    return f


def make(name, src, env):
    """A loop function from source (so a call has its real arity, not f(*args))."""
    ns = dict(env)
    exec(src, ns)
    return ns[name]


def elements(code, n):
    if code == "d":
        return array.array("d", (i * 0.5 for i in range(n)))
    return list(range(n))


def per_call(loop, n):
    t = now()
    loop(n)
    return (now() - t) / n


def compare(before, after, budget_ns, max_n=None, alone=None, empty=None, size_on=None, block_ns=BLOCK_NS):
    """Times `before` and `after` (functions of an iteration count) in many short rounds, each
    timing both back to back (order alternating), so that both sides of a round see the same
    load. The saving is the median of the rounds' differences over the least disturbed quarter of
    the rounds (the fastest by both blocks together); the spread is half the interquartile range
    of those differences. With `alone` and `empty` (the change's own part in a loop by itself,
    and the bare loop), the same rounds also time those: the own time is the median of their
    differences. Returns (before ns, after ns, saving ns, spread ns, rounds, iterations, own ns
    or None), times per call. `size_on` (default: `before`) is the loop the blocks are sized on, and
    `block_ns` their length."""
    # Warm up (first-time costs: a type built, memory touched), then size the blocks on the
    # fastest of a few pilot runs.
    before(2)
    after(2)
    size_on = size_on or before
    n = 1
    while True:
        t = per_call(size_on, n) * n
        if t >= block_ns / 4 or (max_n and n >= max_n) or n >= 1 << 22:
            break
        n *= 4
    per = max(min([t / n] + [per_call(size_on, n) for _ in range(2)]), 1.0)
    n = max(1, int(block_ns / per))
    if max_n:
        n = min(n, max_n)
    block = per * n
    sides = 4 if alone else 2
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, budget_ns / (1.25 * sides * block))))
    stop = now() + budget_ns
    samples = []
    for r in range(rounds):
        if r >= MIN_ROUNDS and (now() > stop or now() > deadline):
            break
        if r % 2:
            a = per_call(after, n)
            b = per_call(before, n)
        else:
            b = per_call(before, n)
            a = per_call(after, n)
        own = per_call(alone, n) - per_call(empty, n) if alone else 0.0
        samples.append((b, a, own))
    # The least disturbed rounds: the fastest quarter by their two blocks together (at least 3).
    samples.sort(key=lambda p: p[0] + p[1])
    calm = samples[: max(3, len(samples) // 4)]
    diffs = sorted(b - a for b, a, _ in calm)
    q = len(diffs) // 4
    saving = median(diffs)
    spread = (diffs[-1 - q] - diffs[q]) / 2
    own = median([o for _, _, o in calm]) if alone else None
    return (median([b for b, _, _ in calm]), median([a for _, a, _ in calm]), saving, spread,
            len(samples), n, own)


def median(xs):
    xs = sorted(xs)
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def module_level(src, names):
    """A loop function of an iteration count that runs `src` (a loop over range(n)) as module-level
    code: its names are looked up and stored in a dict (LOAD_NAME/STORE_NAME), as in a script's
    own top level, where they cost more than a function's locals."""
    code = compile(src, "<module-level>", "exec")

    def run(n, code=code):
        exec(code, dict(names, n=n))

    return run


def reuse(shape, build):
    """A `size`-byte object built per call vs one built once; alone: the building by itself.
    `SIZE@module`: the loops run as module-level code (the site's own scope)."""
    size, _, scope = shape.partition("@")
    size = int(size)
    if not 0 < size <= 1 << 26 or scope not in ("", "module"):
        raise ValueError("size %r" % shape)
    f = nop()
    kept = (ctypes.c_char * size)()
    build = build(size)
    if scope == "module":
        names = {"f": f, "build": build, "kept": kept}
        return (
            module_level("for _ in range(n):\n    b = build()\n    f(b)\n", names),
            module_level("b = kept\nfor _ in range(n):\n    f(b)\n", names),
            None,
            module_level("for _ in range(n):\n    b = build()\n", names),
            module_level("for _ in range(n):\n    pass\n", names),
        )

    def before(n, f=f, build=build):
        for _ in range(n):
            b = build()
            f(b)

    def after(n, f=f, b=kept):
        for _ in range(n):
            f(b)

    def alone(n, build=build):
        for _ in range(n):
            b = build()

    def empty(n):
        for _ in range(n):
            pass

    return before, after, None, alone, empty


def build_by_type(size):
    """`T()`, the array type made once (`Array = c_char * n` at module level)."""
    T = ctypes.c_char * size
    return T


def build_by_repeat(size):
    """`(c_char * n)()`: the array type looked up on every call."""
    c_char = ctypes.c_char
    return lambda: (c_char * size)()


def build_by_helper(size):
    """`create_string_buffer(n)`."""
    csb = ctypes.create_string_buffer
    return lambda: csb(size)


def zero_copy(shape):
    code, _, count = shape.partition("*")
    count = int(count)
    if code not in "di" or not 0 < count <= 1 << 24:
        raise ValueError("shape %r" % shape)
    ctype = ctypes.c_double if code == "d" else ctypes.c_int
    values = [i * 0.5 for i in range(count)] if code == "d" else list(range(count))
    T = ctype * count
    view = T.from_buffer(array.array(code, values))
    f = nop()

    def before(n, f=f, T=T, values=values):
        for _ in range(n):
            f(T(*values))

    def after(n, f=f, view=view):
        for _ in range(n):
            f(view)

    return before, after, None, None, None


def declare_argtypes(shape):
    if not shape or any(c not in "iP" for c in shape):
        raise ValueError("codes %r" % shape)
    undeclared = nop()
    declared_f = nop()
    declared_f.argtypes = [CTYPE[c] for c in shape]
    env_args = ", ".join(repr(VALUE[c]) for c in shape)
    src = "def loop(n):\n    for _ in range(n):\n        f(%s)\n" % env_args
    return make("loop", src, {"f": undeclared}), make("loop", src, {"f": declared_f}), None, None, None


def use_pydll(shape):
    args, ret = parse_signature(shape)
    values = ", ".join(repr(VALUE[c]) for c in args)
    src = "def loop(n):\n    for _ in range(n):\n        f(%s)\n" % values
    before = make("loop", src, {"f": declared(args, ret)})
    after = make("loop", src, {"f": declared(args, ret, ctypes.PyDLL)})
    return before, after, None, None, None


def in_threads(loop, threads):
    """`loop`'s n calls shared among `threads` threads started together, returning when all have
    ended: the calls contend for the GIL as a program's threads do."""

    def run(n, loop=loop, threads=threads):
        workers = [threading.Thread(target=loop, args=(n // threads + (k < n % threads),)) for k in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    return run


def gil_contention(shape):
    """use-pydll in `threads` threads (`THREADS:SIGNATURE`, the threads the profile saw calling):
    with other threads waiting for the GIL, each release and re-acquisition costs more than in
    one thread (the waiters are signalled, and at times woken). The blocks are sized on the calls
    of one thread, and last long against the threads' start-up."""
    threads, _, signature = shape.partition(":")
    threads = int(threads)
    if not 2 <= threads <= MAX_THREADS:
        raise ValueError("threads %r" % shape)
    before, after, _, _, _ = use_pydll(signature)
    return in_threads(before, threads), in_threads(after, threads), before


def bulk_after():
    """One call over all elements, through `from_buffer` views: what replaces a loop of calls."""
    bulk = nop()
    bulk.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    whole_in = array.array("d", bytes(8 * MAX_ELEMENTS))
    whole_out = array.array("d", bytes(8 * MAX_ELEMENTS))

    def after(n, bulk=bulk):
        T = ctypes.c_double * n
        bulk(ctypes.addressof(T.from_buffer(whole_in)), ctypes.addressof(T.from_buffer(whole_out)), n)

    return after


def loop(shape):
    """loop: the per-element loop without its call (read an element, store a result) vs one call
    over all elements — the loop overhead that goes when the calls are batched."""
    if shape not in ("i", "d"):
        raise ValueError("element %r" % shape)
    xs = elements(shape, MAX_ELEMENTS)
    out = [None] * MAX_ELEMENTS
    before = make("loop", "def loop(n):\n    for i in range(n):\n        out[i] = xs[i]\n", {"xs": xs, "out": out})
    return before, bulk_after(), MAX_ELEMENTS, None, None


def loops(change, shape):
    if change == "reuse-type":
        return reuse(shape, build_by_type)
    if change == "reuse-array":
        return reuse(shape, build_by_repeat)
    if change == "reuse-string-buffer":
        return reuse(shape, build_by_helper)
    if change == "zero-copy":
        return zero_copy(shape)
    if change == "declare-argtypes":
        return declare_argtypes(shape)
    if change == "use-pydll":
        return use_pydll(shape)
    if change == "loop":
        return loop(shape)
    raise ValueError("unknown change %r" % change)


def main():
    requests = spec["requests"]
    result = {"python": sys.version, "measurements": [], "skipped": [], "errors": []}
    gc.disable()
    for k, req in enumerate(requests):
        left = deadline - now()
        if left <= 0:
            result["skipped"].extend(requests[k:])
            break
        try:
            budget = left / (len(requests) - k)
            if req["change"] == "gil-contention":
                before, after, one_thread = gil_contention(req["shape"])
                b, a, saving, spread, rounds, n, own = compare(
                    before, after, budget, size_on=one_thread, block_ns=THREADED_BLOCK_NS
                )
            else:
                before, after, max_n, alone, empty = loops(req["change"], req["shape"])
                b, a, saving, spread, rounds, n, own = compare(before, after, budget, max_n, alone, empty)
        except Exception as e:  # a shape this interpreter cannot time: reported, others go on
            result["errors"].append("%s %s: %s: %s" % (req["change"], req["shape"], type(e).__name__, e))
            continue
        result["measurements"].append({
            "change": req["change"], "shape": req["shape"],
            "before_ns": round(b, 1), "after_ns": round(a, 1), "saving_ns": round(saving, 1),
            "spread_ns": round(spread, 1), "rounds": rounds, "iterations": n,
            "own_ns": None if own is None else round(own, 1),
        })
    sys.stdout.write(json.dumps(result) + "\n")


main()
