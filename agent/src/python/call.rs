//! The Python-level call: the `tp_call` wrappers of ctypes' `CFuncPtr` and cffi's cdata, which
//! bracket a whole foreign call so that, with the `ffi_call` hook inside and the
//! `PyEval_RestoreThread` hook after it, the call splits into marshal-in / native / GIL wait /
//! marshal-out. Also the constructor wrapper of ctypes' metaclasses (construction time and bytes).
//!
//! Clock reads are shared: the first calls of each (function, site) pair on a thread, then one
//! call in N (randomised), are timed with five reads; the others only count, key their site and
//! add their bytes. The wrapper decides before the call, so it finds the pair's statistics itself
//! (the C address is in the function object) and hands them to the `ffi_call` hook.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::api::{self, PyObject, TernaryFunc};
use super::frames;
use crate::record::call_ctx::SAVE_ARMED;
pub use crate::record::call_ctx::{CallCtx, ThreadState};
use crate::record::call_ctx::{AWAITING_GIL, BUILT_INSTANCE, BUILT_TYPE_PER_CALL, RELEASING};
use crate::record::clock;
use crate::record::recorder::{CallStats, Counter, ThreadRecorder};
use crate::runtime;

mod general;
mod repeated;
mod sampling;

use general::{general_call, Known};
use repeated::{repeated_call, repeated_timed_call, Repeated};

/// One call in `TIMING_EVERY` is timed (on average). 1 = every call.
pub static TIMING_EVERY: AtomicU32 = AtomicU32::new(1);
/// One call in `STACK_EVERY` records its whole stack (0 = never).
pub static STACK_EVERY: AtomicU32 = AtomicU32::new(64);

/// Held by the unit tests that set [`TIMING_EVERY`] (a process-wide rate; tests run in
/// parallel, in more than one module).
#[cfg(test)]
pub static TIMING_TESTS: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

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
pub static ORIG_SAVE_THREAD: AtomicUsize = AtomicUsize::new(0);

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
    // else the position's inline cache, else the thread's table (the general path's, which also
    // takes every call that samples its stack).
    let general = |repeated| Known {
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
    if !sample_stack {
        if let Some(p) = pos {
            if let Some(stats) = st.repeated_call(p.code, p.ip, address) {
                let call = || Repeated {
                    api,
                    st,
                    stats,
                    family_ctypes,
                    address,
                };
                // SAFETY: as this function.
                return unsafe {
                    if !repeated::takes(stats, args) {
                        general_call(general(Some(stats)))
                    } else if st.untimed_next(stats) {
                        repeated_call::<false>(orig, callable, args, kwargs, call())
                    } else {
                        repeated_timed_call(orig, callable, args, kwargs, call())
                    }
                };
            }
        }
    }
    let call = general(None);
    // SAFETY: as this function.
    unsafe { general_call(call) }
}

/// What the wrappers return when they did not call the original: no object's address (objects
/// are aligned), and not NULL, which the original returns on an error.
#[allow(clippy::manual_dangling_ptr)] // a sentinel, compared only, never a pointer to use
pub(super) const NOT_CALLED: *mut PyObject = 1 as *mut PyObject;

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
pub(super) fn add_spans(stats: &CallStats, ctx: &CallCtx, t0: u64, t3: u64) {
    let times = stats.times(ctx.first);
    let tg = ctx.tg.max(ctx.t2);
    let released = ctx.marshal_in_end();
    add_span(&times.ticks.marshal_in, t0, released);
    if released != ctx.t1 {
        // Giving the GIL up: a hand-off to a thread that asked for it, when one did.
        add_span(&times.ticks.gil_wait, released, ctx.t1);
    }
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
        let how = if type_ticks != 0 {
            BUILT_TYPE_PER_CALL
        } else {
            BUILT_INSTANCE
        };
        rec.python.remember_construction(
            obj as usize,
            t1.wrapping_sub(t0) + type_ticks,
            bytes,
            how,
        );
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
type SaveFn = unsafe extern "C" fn() -> *mut std::ffi::c_void;

/// `PyEval_SaveThread` as `_ctypes` and `_cffi_backend` call it right before `ffi_call`.
///
/// When no timed call is before its native part in any thread, the original is a tail call.
pub unsafe extern "C" fn save_thread() -> *mut std::ffi::c_void {
    // SAFETY: the original PyEval_SaveThread, resolved before this hook was installed.
    let orig: SaveFn =
        unsafe { std::mem::transmute::<usize, SaveFn>(ORIG_SAVE_THREAD.load(Ordering::Relaxed)) };
    let next: SaveFn = if RELEASING.load(Ordering::Relaxed) == 0 {
        orig
    } else {
        save_thread_timed
    };
    // SAFETY: the original call, or the entry that makes it (a tail call either way).
    unsafe { next() }
}

/// `save_thread` when some timed call is before its native part: notes when the release began
/// for this thread's innermost call (its own check: the call may be another thread's), then the
/// original. The note is made first: the original may wait for another thread to take the GIL.
unsafe extern "C" fn save_thread_timed() -> *mut std::ffi::c_void {
    // SAFETY: as in save_thread.
    let orig: SaveFn =
        unsafe { std::mem::transmute::<usize, SaveFn>(ORIG_SAVE_THREAD.load(Ordering::Relaxed)) };
    runtime::guard((), || release_began_here(clock::now()));
    // SAFETY: the original call, unchanged.
    unsafe { orig() }
}

fn release_began_here(ticks: u64) {
    with_innermost(|ctx| ctx.release_began(ticks));
}

/// `f` on this thread's innermost wrapper's call in progress, if recording and there is one.
fn with_innermost(f: impl FnOnce(&mut CallCtx)) {
    if let Some(rec) = crate::record::recorder::if_active() {
        // SAFETY: a non-null ctx is the live CallCtx of this thread's innermost wrapper.
        if let Some(ctx) = unsafe { rec.python.current().as_mut() } {
            f(ctx);
        }
    }
}

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
    with_innermost(|ctx| {
        if ctx.gil_back() > HANDOFF_TICKS && !SAVE_ARMED.load(Ordering::Relaxed) {
            arm_save_thread();
        }
    });
}

/// A GIL wait longer than this (65-130 µs of TSC ticks; 262 µs of the monotonic fallback's
/// nanoseconds) was another thread's turn with the GIL, not an uncontended re-acquisition: that
/// takes ~0.1 µs, and under valgrind (`scripts/ir-breakdown`), 50-100x slower, still under this.
/// Threads that contend wait this long soon: a thread asking for the GIL gets it within the
/// switch interval (5 ms), and the releasing thread waits the other's turn.
const HANDOFF_TICKS: u64 = 1 << 18;

/// Installs the `PyEval_SaveThread` hook (`hook` registers it at install: the layer that patches).
/// Returns false when it could not now (the patcher busy), so that a later wait tries again.
static ARM: AtomicUsize = AtomicUsize::new(0);

pub fn set_arm(arm: fn() -> bool) {
    ARM.store(arm as usize, Ordering::Relaxed);
}

/// Forgets the arming (detach restored the hook's GOT entries with every other).
pub fn disarm() {
    SAVE_ARMED.store(false, Ordering::Relaxed);
    LONG_WAITS.store(0, Ordering::Relaxed);
}

/// Long waits seen while unarmed: the thread count is read at the 1st, 2nd, 4th, 8th, ...
static LONG_WAITS: AtomicU32 = AtomicU32::new(0);

/// Threads of the process, from `/proc/self/stat` (field 20), or 0 when unreadable.
fn process_threads() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // After the command name, which is in parentheses and may hold spaces: field 3 onwards.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    rest.split_whitespace()
        .nth(17)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Arms the `PyEval_SaveThread` hook after a long GIL wait, when the program has another thread
/// (besides the agent's own) that could have held the GIL meanwhile: with one thread, a long wait
/// is the thread's own slowness (the first call's lazy binding, a preemption, valgrind), never a
/// hand-off.
#[cold]
fn arm_save_thread() {
    let seen = LONG_WAITS.fetch_add(1, Ordering::Relaxed) + 1;
    if !seen.is_power_of_two()
        || process_threads() < 2 + u64::from(crate::record::writer::agent_threads())
    {
        return;
    }
    if SAVE_ARMED.swap(true, Ordering::Relaxed) {
        return;
    }
    let arm = ARM.load(Ordering::Relaxed);
    if arm == 0 {
        return;
    }
    // SAFETY: ARM holds a `fn() -> bool` (set_arm).
    let arm: fn() -> bool = unsafe { std::mem::transmute::<usize, fn() -> bool>(arm) };
    if !arm() {
        SAVE_ARMED.store(false, Ordering::Relaxed);
    }
}
