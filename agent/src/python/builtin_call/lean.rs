//! The lean path of a bracketed builtin's call: the thread's last call repeated (same position,
//! same function) — nearly every call of a loop, its stack taken here when the thread's stack
//! countdown runs out; one that is timed goes on to the bracket's second half (`timed_repeat`)
//! with what was found here. It files
//! exactly what [`bracket`](super::bracket) files for such a call (the count, the Python-level
//! count, the arguments' bytes) with no clock read, no guard and no call out of line, and pushes
//! the context the bracket would (untimed: the thread's own, three fields set,
//! `ThreadState::run_untimed`), so the GOT trampoline inside counts the target calls on its own
//! fast path. Anything else returns [`NOT_CALLED`] having changed nothing, and the full bracket runs.
//!
//! It runs in the wrapper's guard, with the full bracket: nothing here can panic once the call
//! is made (loads, stores, compares, wrapping adds), so the call is never made twice.

use std::sync::atomic::Ordering;

use super::{buffer_bytes, Bracketed, Vectorcall, ARGUMENTS_OFFSET, NOT_CALLED};
use crate::python::api::{self, PyObject};
use crate::python::frames;
use crate::record::call_ctx::{CallCtx, ThreadState, ARG_SLOTS, AWAITING_GIL};
use crate::record::recorder::{self, CallStats};
use crate::runtime;

/// The call of bracketed `callable` (its def pointer at `def_at`) when it is a repeat of the
/// thread's last call that takes no stack (timed: by `timed_repeat`); else [`NOT_CALLED`], with
/// nothing moved or filed.
///
/// # Safety
/// GIL held; `callable` a bracketed object whose def pointer is at `def_at`; arguments as a
/// vectorcall's.
#[inline(always)]
pub(super) unsafe fn repeat(
    def_at: usize,
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    if !runtime::ACTIVE.load(Ordering::Relaxed) {
        return NOT_CALLED;
    }
    let (Some(api), Some(rec)) = (api::hot(), recorder::current_at_home()) else {
        return NOT_CALLED;
    };
    // SAFETY: per the contract.
    let b = unsafe { &*(api::word(callable as usize, def_at) as *const Bracketed) };
    let st = &rec.python;
    if b.vectorcall == 0 {
        return NOT_CALLED;
    }
    // The assembly lean path (where there is one) takes this thread's next calls.
    st.note_lean_thread();
    // SAFETY: GIL held on a Python thread.
    let Some(p) = (unsafe { frames::current_position(api) }) else {
        return NOT_CALLED;
    };
    let Some(stats) = st.repeated_call(p.code, p.ip, b.key) else {
        return NOT_CALLED;
    };
    // SAFETY: per the contract; `stats` this thread's for the call's site.
    unsafe { finish(api, st, b, stats, (callable, args, nargsf, kwnames)) }
}

/// The lean path once the call is known to repeat the thread's last call (`stats`, this
/// thread's for its site): it is committed, and made here (the assembly lean path comes here
/// for a repeat it leaves: a stack sample, a timed call, an argument that may refer to bytes).
///
/// # Safety
/// As [`repeat`]; `st` the calling thread's state, `b` the def of bracketed `callable` (with a
/// vectorcall of its own), `stats` its statistics for the call's site (the thread's last call).
#[inline(always)]
pub(super) unsafe fn finish(
    api: &crate::python::api::Api,
    st: &ThreadState,
    b: &Bracketed,
    stats: &'static CallStats,
    call: (*mut PyObject, *const *mut PyObject, usize, *mut PyObject),
) -> *mut PyObject {
    let (callable, args, nargsf, kwnames) = call;
    // Committed: the stack countdown moves on as `bracket`'s sampling would move it, and a
    // repeat that samples its stack takes it here (the stack is all the bracket would add).
    let stack = if st.skips_stack_next() {
        st.skip_stack();
        0
    } else {
        // SAFETY: as above.
        unsafe { sampled_stack(api, st) }
    };
    if !st.untimed_next(stats) {
        // A timed repeat: the full bracket's second half, with what is known here.
        // SAFETY: per the contract; `stats` is this thread's for the call's site.
        return unsafe {
            super::timed_repeat(api, st, b, stats, stack, (callable, args, nargsf, kwnames))
        };
    }
    st.count_untimed(stats);
    if stack != 0 {
        stats.note_stack(stack - 1);
    }
    // What `file` files for an untimed call that takes no stack — before the call, so that
    // nothing but the context is live across it (the call is made: nothing below returns
    // without making it).
    stats.calls.add(1);
    stats.python_calls.add(1);
    let nargs = nargsf & !ARGUMENTS_OFFSET;
    if nargs != 0 {
        // SAFETY: `args` holds `nargs` live objects (the vectorcall convention).
        let buffer = unsafe { buffer_bytes(api, args, nargs) };
        if buffer != 0 {
            stats.buffer_bytes.add(buffer);
        }
    }
    // SAFETY: the object's own vectorcall before we replaced it (not 0: checked above).
    let original: Vectorcall = unsafe { runtime::fn_at(b.vectorcall) };
    if b.whole {
        // Its module is the target itself: no target call inside is its native part, which the
        // lean context (only ever for builtins whose native part the GOT trampoline times) would
        // tell the trampoline's fast path.
        // SAFETY: as below.
        return unsafe { nested(st, stats, b, original, (callable, args, nargsf, kwnames)) };
    }
    // As in `bracket`: the target calls inside are this call's native part.
    // SAFETY: the original call, unchanged.
    match st.run_untimed(stats.site, stats, || unsafe {
        original(callable, args, nargsf, kwnames)
    }) {
        Some(result) => result,
        // SAFETY: as above; the thread's lean context is pushed by a call further out.
        None => unsafe { nested(st, stats, b, original, (callable, args, nargsf, kwnames)) },
    }
}

/// The thread's stack (its id + 1) when its stack countdown, which `skips_stack_next` said may
/// run out now, does; else 0. The countdown moves on as the bracket's sampling moves it.
///
/// # Safety
/// GIL held on a Python thread; `st` its state.
#[inline(never)]
unsafe fn sampled_stack(api: &crate::python::api::Api, st: &ThreadState) -> u32 {
    if !st.sample(
        &st.stack_countdown,
        crate::python::STACK_EVERY.load(Ordering::Relaxed),
    ) {
        return 0;
    }
    // SAFETY: per the contract.
    unsafe { frames::current_stack(api, &st.last_stack) + 1 }
}

/// An untimed repeat inside another one (a callback of the builtin calling one again), whose
/// context the thread's lean one is already, or of a builtin whose module is the target itself:
/// it gets one of its own on the stack, as the bracket builds it.
///
/// # Safety
/// As [`repeat`]; `original` the object's own vectorcall; `stats` this thread's for the call.
#[cold]
#[inline(never)]
unsafe fn nested(
    st: &ThreadState,
    stats: &'static CallStats,
    b: &Bracketed,
    original: Vectorcall,
    call: (*mut PyObject, *const *mut PyObject, usize, *mut PyObject),
) -> *mut PyObject {
    let (callable, args, nargsf, kwnames) = call;
    let nargs = nargsf & !ARGUMENTS_OFFSET;
    let mut ctx = CallCtx {
        native_via_got: !b.whole,
        ..CallCtx::new(stats.site, stats, false, false, nargs.min(ARG_SLOTS) as u32)
    };
    // SAFETY: the original call, unchanged.
    let (result, _, _) = st.run_in(&mut ctx, false, || unsafe {
        original(callable, args, nargsf, kwnames)
    });
    if ctx.awaiting_gil {
        // A libffi call inside left a GIL wait open that this bracket does not file.
        AWAITING_GIL.fetch_sub(1, Ordering::Relaxed);
    }
    result
}
