//! The Python-level call: the `tp_call` wrappers of ctypes' `CFuncPtr` and cffi's cdata, which
//! bracket a whole foreign call so that, with the `ffi_call` hook inside and the
//! `PyEval_RestoreThread` hook after it, the call splits into marshal-in / native / GIL wait /
//! marshal-out. Also the constructor wrapper of ctypes' metaclasses (construction time and bytes).
//!
//! Clock reads are shared: the first calls of each (function, site) pair on a thread, then one
//! call in N (randomised), are timed with five reads; the others only count, key their site and
//! add their bytes. The wrapper decides before the call, so it finds the pair's statistics itself
//! (the C address is in the function object) and hands them to the `ffi_call` hook.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::api::{self, Api, PyObject, TernaryFunc};
use super::arg_bytes::{item_bytes, Construction, Slot};
use super::frames;
use crate::record::call_ctx::AWAITING_GIL;
pub use crate::record::call_ctx::{CallCtx, ThreadState, ARG_SLOTS};
use crate::record::clock;
use crate::record::recorder::{CallStats, Counter, ThreadRecorder};
use crate::runtime;

mod sampling;

/// One call in `TIMING_EVERY` is timed (on average). 1 = every call.
pub static TIMING_EVERY: AtomicU32 = AtomicU32::new(1);
/// One call in `STACK_EVERY` records its whole stack (0 = never).
pub static STACK_EVERY: AtomicU32 = AtomicU32::new(64);

pub static ORIG_DEALLOC: AtomicUsize = AtomicUsize::new(0);
pub static ORIG_REPEAT: AtomicUsize = AtomicUsize::new(0);

/// `tp_dealloc` of ctypes' instance base types: a buffer that was built for one call and passed
/// fresh to it costs its deallocation too, which reusing the buffer saves as well.
pub unsafe extern "C" fn dealloc(obj: *mut PyObject) {
    type Dealloc = unsafe extern "C" fn(*mut PyObject);
    // SAFETY: ORIG_DEALLOC is these types' original deallocator.
    let orig: Dealloc =
        unsafe { std::mem::transmute::<usize, Dealloc>(ORIG_DEALLOC.load(Ordering::Relaxed)) };
    let stats = runtime::guard(None, || {
        crate::record::recorder::if_active().and_then(|rec| rec.python.take_passed(obj as usize))
    });
    let Some(stats) = stats else {
        // SAFETY: the original deallocation, unchanged.
        return unsafe { orig(obj) };
    };
    let t0 = runtime::guard(0, clock::now);
    // SAFETY: the original deallocation, unchanged.
    unsafe { orig(obj) };
    runtime::guard((), || {
        stats.construction_ticks.add(clock::now().wrapping_sub(t0))
    });
}

/// `sq_repeat` of ctypes' metaclasses: `c_double * n` finds (or makes) the array type a buffer is
/// built from; its time goes to the next construction on this thread.
pub unsafe extern "C" fn repeat(ty: *mut PyObject, n: isize) -> *mut PyObject {
    type Repeat = unsafe extern "C" fn(*mut PyObject, isize) -> *mut PyObject;
    // SAFETY: ORIG_REPEAT is the metaclasses' original sq_repeat.
    let orig: Repeat =
        unsafe { std::mem::transmute::<usize, Repeat>(ORIG_REPEAT.load(Ordering::Relaxed)) };
    let rec = runtime::guard(None, crate::record::recorder::if_active);
    let Some(rec) = rec else {
        // SAFETY: the original call, unchanged.
        return unsafe { orig(ty, n) };
    };
    let t0 = runtime::guard(0, clock::now);
    // SAFETY: the original call, unchanged.
    let result = unsafe { orig(ty, n) };
    runtime::guard((), || {
        let st = &rec.python;
        let pending = st.pending_type_ticks.load(Ordering::Relaxed);
        st.pending_type_ticks
            .store(pending + clock::now().wrapping_sub(t0), Ordering::Relaxed);
    });
    result
}

/// The original `tp_call` of each family, set when the types are patched.
pub static ORIG_CTYPES: AtomicUsize = AtomicUsize::new(0);
pub static ORIG_CFFI: AtomicUsize = AtomicUsize::new(0);
pub static ORIG_CONSTRUCT: AtomicUsize = AtomicUsize::new(0);
pub static ORIG_RESTORE_THREAD: AtomicUsize = AtomicUsize::new(0);

/// The wrapper of both families: finds the call's site and statistics, decides whether it is
/// timed, notes its arguments' bytes, calls the original with its [`CallCtx`] pushed for the
/// hooks inside, then files what was measured. Returns the original's result, or [`NOT_CALLED`]
/// when it did not call it (recording off, an unknown thread): its entry then calls the original
/// itself, as it does when a panic of ours stops this before the call. Nothing after the call can
/// panic out of here (that part runs in guards of its own), so a call is never made twice.
///
/// # Safety
/// A tp_call of the family, with the GIL held; `orig` the family's original tp_call.
#[inline(always)]
unsafe fn wrapped_call(
    orig: TernaryFunc,
    family_ctypes: bool,
    callable: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    #[cfg(feature = "floor-probe")]
    // SAFETY: as this function.
    if family_ctypes && unsafe { super::floor_probe::call(callable, args) } {
        return NOT_CALLED;
    }
    if !runtime::ACTIVE.load(Ordering::Relaxed) {
        return NOT_CALLED;
    }
    let (Some(api), Some(rec)) = (api::hot(), crate::record::recorder::current()) else {
        return NOT_CALLED;
    };
    let st = &rec.python;
    // The end of the gap since this site's last call: read before any of our own work, so the
    // gap is the program's time alone. The decision does not depend on the site.
    let sample_stack = st.sample(&st.stack_countdown, STACK_EVERY.load(Ordering::Relaxed));
    let arrived = if sample_stack && st.last_leave.load(Ordering::Relaxed) != 0 {
        clock::now()
    } else {
        0
    };
    // SAFETY: tp_call runs with the GIL held on a Python thread.
    let pos = unsafe { frames::current_position(api) };
    // SAFETY: the callable is a live object of the patched family.
    let address = unsafe { callee(callable as usize, family_ctypes) };
    // One look-up of the pair's statistics: the thread's last call when this one repeats it,
    // else the position's inline cache, else the thread's table.
    let repeated = pos.and_then(|p| st.repeated_call(p.code, p.ip, address));
    if !sample_stack {
        if let Some(stats) = repeated {
            // SAFETY: as this function.
            let result = unsafe {
                let call = || Repeated {
                    api,
                    st,
                    stats,
                    family_ctypes,
                    address,
                };
                if st.untimed_next(stats) {
                    repeated_call::<false>(orig, callable, args, kwargs, call())
                } else {
                    repeated_timed_call(orig, callable, args, kwargs, call())
                }
            };
            if result != NOT_CALLED {
                return result;
            }
        }
    }
    let call = Known {
        orig,
        family_ctypes,
        callable,
        args,
        kwargs,
        api,
        rec,
        sample_stack,
        arrived,
        pos,
        address,
        repeated,
    };
    // SAFETY: as this function.
    unsafe { general_call(call) }
}

/// What the wrappers return when they did not call the original: no object's address (objects
/// are aligned), and not NULL, which the original returns on an error.
#[allow(clippy::manual_dangling_ptr)] // a sentinel, compared only, never a pointer to use
const NOT_CALLED: *mut PyObject = 1 as *mut PyObject;

/// The call, and what the wrapper found before it chose between [`repeated_call`] and
/// [`general_call`].
struct Known {
    orig: TernaryFunc,
    family_ctypes: bool,
    callable: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
    api: &'static Api,
    rec: &'static ThreadRecorder,
    sample_stack: bool,
    arrived: u64,
    pos: Option<frames::Position>,
    address: usize,
    repeated: Option<&'static CallStats>,
}

/// [`repeated_call`] of a call its pair's countdown may time, out of line.
///
/// # Safety
/// As [`repeated_call`].
#[inline(never)]
unsafe fn repeated_timed_call(
    orig: TernaryFunc,
    callable: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
    call: Repeated,
) -> *mut PyObject {
    // SAFETY: per the contract.
    unsafe { repeated_call::<true>(orig, callable, args, kwargs, call) }
}

/// What [`repeated_call`] knows of its call: the thread's state, the pair (its last call's), the
/// family and the C address the callable reaches.
#[derive(Clone, Copy)]
struct Repeated<'a> {
    api: &'a Api,
    st: &'a ThreadState,
    stats: &'static CallStats,
    family_ctypes: bool,
    address: usize,
}

/// The common case, kept lean: the thread's last call repeated (same position, same C function,
/// `stats` its pair's), not taking its stack, its site's declarations in order, at most
/// `ARG_SLOTS` arguments; not timed unless `MAY_TIME` (the pair's countdown is due: one call in
/// `TIMING_EVERY`, and its first calls). A plain number costs an argument one compare; any other
/// is noted out of line ([`note_argument`]). Checks all that before it changes anything, and
/// returns [`NOT_CALLED`] (the general path then takes the call) when one does not hold; else the
/// original's result.
///
/// # Safety
/// As [`wrapped_call`]; `stats` this thread's, `args` the call's tuple (or null); without
/// `MAY_TIME`, `untimed_next(stats)` said so.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn repeated_call<const MAY_TIME: bool>(
    orig: TernaryFunc,
    callable: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
    call: Repeated,
) -> *mut PyObject {
    let Repeated {
        api,
        st,
        stats,
        family_ctypes,
        address,
    } = call;
    if stats.excluded || stats.site_flags.load(Ordering::Relaxed) != 0 {
        return NOT_CALLED;
    }
    let nargs = if args.is_null() {
        0
    } else {
        // SAFETY: args is the call's tuple.
        unsafe { api::word(args as usize, api::OB_SIZE) }
    };
    if nargs > ARG_SLOTS {
        return NOT_CALLED;
    }
    // Decided: this path takes the call; the pair's countdown moves on.
    let (timed, first) = if MAY_TIME {
        st.sample_pair(stats)
    } else {
        st.count_untimed(stats);
        (false, false)
    };
    let mut ctx = CallCtx {
        site: stats.site,
        timed,
        first,
        fast: !timed,
        expect: stats,
        awaiting_gil: false,
        any_buffer: false,
        stats: std::ptr::null(),
        t1: 0,
        t2: 0,
        tg: 0,
        nargs: nargs as u32,
        arg_bytes: [MaybeUninit::uninit(); ARG_SLOTS],
    };
    let mut construction = Construction::default();
    if nargs != 0 {
        // SAFETY: args is the call's tuple: ob_size items from `tuple_items`.
        unsafe {
            let items = args as usize + api.layout.tuple_items;
            for i in 0..nargs {
                let item = api::word(items, 8 * i);
                let ty = api::type_of(item);
                if ty == api.float_type || ty == api.long_type || item == api.none {
                    continue; // refers to no bytes
                }
                let slot = Slot {
                    callable: callable as usize,
                    index: i,
                };
                note_argument(
                    api,
                    st,
                    slot,
                    item,
                    (family_ctypes, address),
                    &mut ctx,
                    &mut construction,
                );
            }
        }
    }
    let outer = st.ctx.load(Ordering::Relaxed);
    st.ctx.store(&mut ctx, Ordering::Relaxed);
    let t0 = if timed { clock::now() } else { 0 };
    // SAFETY: the original call, unchanged.
    let result = unsafe { orig(callable, args, kwargs) };
    let t3 = if timed { clock::now() } else { 0 };
    st.ctx.store(outer, Ordering::Relaxed);
    // No guard around the rest (it would cost a call on every one): nothing below can panic —
    // loads, stores, wrapping adds and compares, clock reads; the rare site look-up has its own.
    if timed && ctx.awaiting_gil {
        // The GIL was never given up (PyDLL, an error before the call): nothing to wait for.
        ctx.awaiting_gil = false;
        AWAITING_GIL.fetch_sub(1, Ordering::Relaxed);
    }
    // SAFETY: set by the ffi_call hook to a leaked CallStats of this thread, or null.
    if let Some(counted) = unsafe { ctx.stats.as_ref() } {
        counted.python_calls.add(1);
        if timed {
            add_spans(counted, &ctx, t0, t3);
        }
        if construction.last != 0 {
            file_construction(st, counted, &construction);
        }
        if !std::ptr::eq(counted, stats) {
            // The hook saw another C function than the callable's (see `callee`).
            runtime::guard((), || other_pair_counted(counted));
        }
    }
    if st.next_samples_soon() {
        st.last_site.store(stats.site, Ordering::Relaxed);
        st.last_leave.store(clock::now(), Ordering::Relaxed);
    }
    result
}

/// An argument that is not a plain number, of a call of `family_ctypes` reaching C `address`: the
/// bytes it refers to (into `ctx`), and its construction if it was built for this call. GIL held.
///
/// # Safety
/// GIL held; `item` the call's argument `slot.index`, live.
#[inline(never)]
unsafe fn note_argument(
    api: &Api,
    st: &ThreadState,
    slot: Slot,
    item: usize,
    (family_ctypes, address): (bool, usize),
    ctx: &mut CallCtx,
    construction: &mut Construction,
) {
    if family_ctypes && super::site_rules::is_ctypes_internal(address) {
        // ctypes' own function: its arguments are ctypes' business (see there).
        return;
    }
    let index = slot.index;
    // SAFETY: per the contract.
    let b = unsafe { item_bytes(api, st, slot, item, family_ctypes, construction) };
    ctx.set_arg_bytes(index, b);
}

/// A buffer built for this call and passed to it: its construction is the call's pair's, and so
/// will be its deallocation (`dealloc`).
#[inline(never)]
fn file_construction(st: &ThreadState, stats: &CallStats, construction: &Construction) {
    stats.construction_ticks.add(construction.ticks);
    stats.construction_bytes.add(construction.bytes);
    stats.fresh_buffer_calls.add(1);
    st.remember_passed(construction.last, stats);
}

/// A repeated call whose hook counted it into another pair: that pair's site declarations.
#[cold]
#[inline(never)]
fn other_pair_counted(stats: &CallStats) {
    let flags = frames::site_flags(stats.site);
    stats.site_flags.store(flags, Ordering::Relaxed);
    if flags & 1 != 0 {
        stats.undeclared_argtypes.add(1);
    }
    if flags & 2 != 0 {
        stats.undeclared_restype.add(1);
    }
}

/// Every other call: the site found (and its pair looked up) when the call does not repeat the
/// thread's last, the timing decided, every argument's bytes, constructions, the stack.
///
/// # Safety
/// As [`wrapped_call`]; `known` found for this call.
#[cold]
#[inline(never)]
unsafe fn general_call(known: Known) -> *mut PyObject {
    let Known {
        orig,
        family_ctypes,
        callable,
        args,
        kwargs,
        api,
        rec,
        sample_stack,
        arrived,
        pos,
        address,
        repeated,
    } = known;
    let st = &rec.python;
    let (site, expect) = match repeated {
        Some(s) => (frames::Site::known(s.site), Some(s)),
        None => {
            let site = match pos {
                // SAFETY: as above; `p` is this thread's position now.
                Some(p) => unsafe { frames::site_at(api, p, callable as usize) },
                None => frames::Site::UNKNOWN,
            };
            let expect = match site.cached(address, rec) {
                Some(s) => Some(s),
                None => find_stats(rec, address, site.id),
            };
            (site, expect)
        }
    };
    let (timed, first) = match expect {
        Some(s) => st.sample_pair(s),
        // A pair this thread has not called yet: its first call.
        None => (true, true),
    };
    let mut ctx = CallCtx {
        site: site.id,
        timed,
        first,
        fast: !timed && expect.is_some_and(|s| !s.excluded),
        expect: expect.map_or(std::ptr::null(), |s| s as *const CallStats),
        awaiting_gil: false,
        any_buffer: false,
        stats: std::ptr::null(),
        t1: 0,
        t2: 0,
        tg: 0,
        nargs: 0,
        arg_bytes: [MaybeUninit::uninit(); ARG_SLOTS],
    };
    let (stack, gap) = if sample_stack {
        // SAFETY: as above.
        unsafe { sample_stack_now(api, st, site.id, arrived) }
    } else {
        (0, 0)
    };
    // Argument bytes and fresh constructions (GIL held, before the call releases it).
    let mut construction = Construction::default();
    if !args.is_null() {
        // SAFETY: args is the call's tuple: ob_size items from `tuple_items`.
        unsafe {
            let items = args as usize + api.layout.tuple_items;
            let n = api::word(args as usize, api::OB_SIZE).min(ARG_SLOTS);
            ctx.nargs = n as u32;
            // Asked only for an argument that is not a plain number (never on a float loop).
            let mut internal = None;
            for i in 0..n {
                let item = api::word(items, 8 * i);
                let ty = api::type_of(item);
                if ty == api.float_type || ty == api.long_type || item == api.none {
                    continue; // refers to no bytes
                }
                if *internal.get_or_insert_with(|| {
                    family_ctypes && super::site_rules::is_ctypes_internal(address)
                }) {
                    // ctypes' own function: its arguments are ctypes' business (see there).
                    continue;
                }
                let slot = Slot {
                    callable: callable as usize,
                    index: i,
                };
                let b = item_bytes(api, st, slot, item, family_ctypes, &mut construction);
                ctx.set_arg_bytes(i, b);
            }
        }
    }
    // A load and a store, not a swap: only this thread writes its ctx, and an xchg would be a
    // locked instruction on every call.
    let outer = st.ctx.load(Ordering::Relaxed);
    st.ctx.store(&mut ctx, Ordering::Relaxed);
    let t0 = if timed { clock::now() } else { 0 };
    // SAFETY: the original call, unchanged.
    let result = unsafe { orig(callable, args, kwargs) };
    let t3 = if timed { clock::now() } else { 0 };
    st.ctx.store(outer, Ordering::Relaxed);
    if timed && ctx.awaiting_gil {
        // The GIL was never given up (PyDLL, an error before the call): nothing to wait for.
        ctx.awaiting_gil = false;
        AWAITING_GIL.fetch_sub(1, Ordering::Relaxed);
    }
    let spans = (timed, t0, t3);
    runtime::guard((), || {
        file_general(
            family_ctypes,
            st,
            &ctx,
            &site,
            pos,
            address,
            repeated,
            &construction,
            spans,
            stack,
            gap,
        )
    });
    result
}

/// What `general_call` files once the call returned (its context popped).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn file_general(
    family_ctypes: bool,
    st: &ThreadState,
    ctx: &CallCtx,
    site: &frames::Site,
    pos: Option<frames::Position>,
    address: usize,
    repeated: Option<&'static CallStats>,
    construction: &Construction,
    (timed, t0, t3): (bool, u64, u64),
    stack: u32,
    gap: u64,
) {
    // SAFETY: set by the ffi_call hook to a leaked CallStats of this thread, or null.
    if let Some(stats) = unsafe { ctx.stats.as_ref() } {
        stats.python_calls.add(1);
        if repeated.is_none() {
            stats
                .site_flags
                .store(frames::site_flags(site.id), Ordering::Relaxed);
            if let Some(p) = pos
                .filter(|_| site.cacheable() && stats.function == address && stats.site == site.id)
            {
                site.remember(stats);
                st.remember_call(p.code, p.ip, stats);
            }
        }
        if timed {
            add_spans(stats, ctx, t0, t3);
        }
        if construction.last != 0 {
            file_construction(st, stats, construction);
        }
        let flags = stats.site_flags.load(Ordering::Relaxed);
        if family_ctypes && flags != 0 {
            if flags & 1 != 0 {
                stats.undeclared_argtypes.add(1);
            }
            if flags & 2 != 0 {
                stats.undeclared_restype.add(1);
            }
        }
        if stack != 0 {
            stats.note_stack(stack - 1);
        }
        if gap != 0 {
            stats.gap_ticks.add(gap);
            stats.gap_samples.add(1);
        }
    }
    if st.next_samples_soon() {
        // The next call takes its stack and measures the gap since this one returned.
        st.last_site.store(site.id, Ordering::Relaxed);
        st.last_leave.store(clock::now(), Ordering::Relaxed);
    }
}

/// The pair's statistics from the thread's table, when the position's cache does not have them.
#[inline(never)]
fn find_stats(
    rec: &'static ThreadRecorder,
    function: usize,
    site: u32,
) -> Option<&'static CallStats> {
    rec.find_stats(function, site)
}

/// A call that records its stack: the stack's id (+1), and the gap since the thread's last call
/// returned when it was made at the same site (0 when it was not, or its return was not noted).
///
/// # Safety
/// GIL held, on a thread with a Python thread state.
#[cold]
#[inline(never)]
unsafe fn sample_stack_now(api: &Api, st: &ThreadState, site: u32, arrived: u64) -> (u32, u64) {
    let left = st.last_leave.load(Ordering::Relaxed);
    st.last_leave.store(0, Ordering::Relaxed);
    let gap = if arrived != 0 && left != 0 && st.last_site.load(Ordering::Relaxed) == site {
        arrived.saturating_sub(left)
    } else {
        0
    };
    // SAFETY: per the contract.
    (unsafe { frames::current_stack(api) } + 1, gap)
}

/// The C address a call of `callable` reaches: what `ffi_call` will be given as its function.
/// ctypes keeps it behind `CDataObject.b_ptr`, cffi in `CDataObject.c_data` (both unchanged from
/// 3.8 to 3.14); the hook checks it against the address it sees.
///
/// # Safety
/// `callable` a live ctypes `CFuncPtr` (`family_ctypes`) or cffi cdata.
#[inline(always)]
unsafe fn callee(callable: usize, family_ctypes: bool) -> usize {
    // SAFETY: per the contract; b_ptr of a live ctypes instance points at its value (inline, or
    // a buffer allocated with it), never null.
    unsafe {
        if family_ctypes {
            api::word(api::word(callable, api::CDATA_B_PTR), 0)
        } else {
            api::word(callable, api::CFFI_C_DATA)
        }
    }
}

/// A timed call's marshal-in, GIL wait and marshal-out, from the wrapper's clock reads (`t0`
/// before the original, `t3` after) and the hooks' (in `ctx`).
#[inline(always)]
fn add_spans(stats: &CallStats, ctx: &CallCtx, t0: u64, t3: u64) {
    let times = stats.times(ctx.first);
    let tg = ctx.tg.max(ctx.t2);
    add_span(&times.ticks.marshal_in, t0, ctx.t1);
    add_span(&times.ticks.gil_wait, ctx.t2, tg);
    add_span(&times.ticks.marshal_out, tg, t3);
}

#[inline(always)]
fn add_span(counter: &Counter, from: u64, to: u64) {
    if from != 0 && to >= from {
        counter.add(to - from);
    }
}

/// `tp_call` of ctypes' `CFuncPtr` and every subclass.
pub unsafe extern "C" fn ctypes_call(
    callable: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: ORIG_CTYPES is the tp_call these types had before we patched them.
    let orig: TernaryFunc =
        unsafe { std::mem::transmute::<usize, TernaryFunc>(ORIG_CTYPES.load(Ordering::Relaxed)) };
    // SAFETY: forwarded from the interpreter's call of a CFuncPtr, GIL held.
    let result = runtime::guard(NOT_CALLED, || unsafe {
        wrapped_call(orig, true, callable, args, kwargs)
    });
    if result != NOT_CALLED {
        return result;
    }
    // SAFETY: the original call, unchanged (the wrapper did not make it).
    unsafe { orig(callable, args, kwargs) }
}

/// `tp_call` of cffi's cdata types.
pub unsafe extern "C" fn cffi_call(
    callable: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: ORIG_CFFI is the tp_call these types had before we patched them.
    let orig: TernaryFunc =
        unsafe { std::mem::transmute::<usize, TernaryFunc>(ORIG_CFFI.load(Ordering::Relaxed)) };
    // SAFETY: forwarded from the interpreter's call of a cdata, GIL held.
    let result = runtime::guard(NOT_CALLED, || unsafe {
        wrapped_call(orig, false, callable, args, kwargs)
    });
    if result != NOT_CALLED {
        return result;
    }
    // SAFETY: the original call, unchanged (the wrapper did not make it).
    unsafe { orig(callable, args, kwargs) }
}

/// `tp_call` of ctypes' metaclasses: calling `c_double * 1000`, `Structure` subclasses, ...
/// builds an object; remember how long that took and how big it is, so the call that receives it
/// gets the construction attributed.
pub unsafe extern "C" fn construct(
    ty: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: ORIG_CONSTRUCT is the metaclasses' original tp_call (type_call).
    let orig: TernaryFunc = unsafe {
        std::mem::transmute::<usize, TernaryFunc>(ORIG_CONSTRUCT.load(Ordering::Relaxed))
    };
    let rec = runtime::guard(None, crate::record::recorder::if_active);
    let Some(rec) = rec else {
        // SAFETY: the original call, unchanged.
        return unsafe { orig(ty, args, kwargs) };
    };
    let t0 = runtime::guard(0, clock::now);
    // SAFETY: the original call, unchanged.
    let obj = unsafe { orig(ty, args, kwargs) };
    // SAFETY: the GIL is held (a tp_call); `obj` is what the original returned.
    runtime::guard((), || unsafe { constructed(rec, ty, obj, t0) });
    obj
}

/// Files what a constructor call built (an instance of exactly the called type), started at `t0`.
///
/// # Safety
/// GIL held; `ty` the called type; `obj` its call's result (null on error).
unsafe fn constructed(rec: &ThreadRecorder, ty: *mut PyObject, obj: *mut PyObject, t0: u64) {
    let t1 = clock::now();
    // SAFETY: obj is a live object; only an instance of exactly the called ctypes type is a
    // CDataObject whose b_size we may read.
    if !obj.is_null() && unsafe { api::type_of(obj as usize) } == ty as usize {
        // SAFETY: as above.
        let bytes = unsafe { api::word(obj as usize, api::CDATA_B_SIZE) } as u64;
        let type_ticks = rec.python.pending_type_ticks.swap(0, Ordering::Relaxed);
        rec.python
            .remember_construction(obj as usize, t1.wrapping_sub(t0) + type_ticks, bytes);
        // SAFETY: the GIL is held and no exception is set (the call succeeded).
        unsafe { super::helpers::ensure_patched() };
    }
}

/// `PyEval_RestoreThread` as `_ctypes` and `_cffi_backend` call it right after `ffi_call`.
///
/// When no timed call waits for the GIL in any thread, none waits in this one either (its own
/// would have been counted before this call): the original is then a tail call, nothing of ours
/// on the stack while the thread waits for the GIL.
pub unsafe extern "C" fn restore_thread(tstate: *mut std::ffi::c_void) {
    // SAFETY: the original PyEval_RestoreThread, resolved before this hook was installed.
    let orig: RestoreFn = unsafe {
        std::mem::transmute::<usize, RestoreFn>(ORIG_RESTORE_THREAD.load(Ordering::Relaxed))
    };
    let next: RestoreFn = if AWAITING_GIL.load(Ordering::Relaxed) == 0 {
        orig
    } else {
        restore_thread_timed
    };
    // SAFETY: the original call, or the entry that makes it (a tail call either way).
    unsafe { next(tstate) }
}

type RestoreFn = unsafe extern "C" fn(*mut std::ffi::c_void);

/// `restore_thread` when some timed call waits for the GIL: the original, then whether the
/// innermost call of this thread was the one waiting.
unsafe extern "C" fn restore_thread_timed(tstate: *mut std::ffi::c_void) {
    // SAFETY: as in restore_thread.
    let orig: RestoreFn = unsafe {
        std::mem::transmute::<usize, RestoreFn>(ORIG_RESTORE_THREAD.load(Ordering::Relaxed))
    };
    // SAFETY: the original call, unchanged.
    unsafe { orig(tstate) };
    runtime::guard((), gil_back_here);
}

/// The GIL came back to this thread: the innermost wrapper's call, if it waits, ends its wait.
#[inline(never)]
fn gil_back_here() {
    if let Some(rec) = crate::record::recorder::if_active() {
        // SAFETY: a non-null ctx is the live CallCtx of this thread's innermost wrapper.
        if let Some(ctx) = unsafe { rec.python.current().as_mut() } {
            ctx.gil_back();
        }
    }
}
