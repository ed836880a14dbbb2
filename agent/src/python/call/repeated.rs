//! The lean path of a Python-level call: the thread's last call repeated (same position, same C
//! function), which is nearly every call of a loop. See [`repeated_call`].

use std::sync::atomic::Ordering;

use super::super::api::{self, Api, PyObject, TernaryFunc};
use super::super::arg_bytes::{item_bytes, Construction, Slot};
use super::super::frames;
use super::{add_spans, ThreadState};
use crate::record::call_ctx::{CallCtx, ARG_SLOTS, AWAITING_GIL};
use crate::record::clock;
use crate::record::recorder::CallStats;
use crate::runtime;

/// [`repeated_call`] of a call its pair's countdown may time, out of line.
///
/// # Safety
/// As [`repeated_call`].
#[inline(never)]
pub(super) unsafe fn repeated_timed_call(
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
pub(super) struct Repeated<'a> {
    pub(super) api: &'a Api,
    pub(super) st: &'a ThreadState,
    pub(super) stats: &'static CallStats,
    pub(super) family_ctypes: bool,
    pub(super) address: usize,
}

/// Whether [`repeated_call`] takes a repeated call of pair `stats` with arguments `args`: not an
/// excluded pair's, its site's declarations in order, at most `ARG_SLOTS` arguments.
#[inline(always)]
pub(super) fn takes(stats: &CallStats, args: *mut PyObject) -> bool {
    !stats.excluded && stats.site_flags.load(Ordering::Relaxed) == 0 && arg_count(args) <= ARG_SLOTS
}

/// How many arguments a call has (its tuple's size; 0 without one).
#[inline(always)]
fn arg_count(args: *mut PyObject) -> usize {
    if args.is_null() {
        0
    } else {
        // SAFETY: a call's arguments are a live tuple.
        unsafe { api::word(args as usize, api::OB_SIZE) }
    }
}

/// The common case, kept lean: the thread's last call repeated (same position, same C function,
/// `stats` its pair's), not taking its stack, one it [`takes`]; not timed unless `MAY_TIME` (the
/// pair's countdown is due: one call in `TIMING_EVERY`, and its first calls). A plain number
/// costs an argument one compare; any other is noted out of line ([`note_arguments`]). Returns
/// the original's result.
///
/// # Safety
/// As [`wrapped_call`](super::wrapped_call); `stats` this thread's, `args` the call's tuple (or null),
/// [`takes`] said yes; without `MAY_TIME`, `untimed_next(stats)` said so.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn repeated_call<const MAY_TIME: bool>(
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
    let nargs = arg_count(args);
    // The pair's countdown moves on.
    let (timed, first) = if MAY_TIME {
        st.sample_pair(stats)
    } else {
        st.count_untimed(stats);
        (false, false)
    };
    let mut ctx = CallCtx {
        fast: !timed,
        ..CallCtx::new(stats.site, stats, timed, first, nargs as u32)
    };
    let mut construction = Construction::default();
    if nargs != 0 {
        // SAFETY: args is the call's tuple: ob_size items from `tuple_items`.
        unsafe {
            let items = args as usize + api.layout.tuple_items;
            // Plain numbers refer to no bytes: a loop that calls nothing, so nothing is spilled.
            let mut i = 0;
            while i < nargs {
                let item = api::word(items, 8 * i);
                let ty = api::type_of(item);
                if ty != api.float_type && ty != api.long_type && item != api.none {
                    break;
                }
                i += 1;
            }
            if i < nargs {
                let call = (callable as usize, family_ctypes, address);
                note_arguments(
                    api,
                    st,
                    call,
                    (items, i, nargs),
                    &mut ctx,
                    &mut construction,
                );
            }
        }
    }
    // SAFETY: the original call, unchanged.
    let (result, t0, t3) = st.run_in(&mut ctx, timed, || unsafe { orig(callable, args, kwargs) });
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

/// The call's arguments from the first that is not a plain number (`from`) to the last (`n`), of
/// a call of `callable` (`family_ctypes`, reaching C `address`): the bytes each refers to (into
/// `ctx`), and its construction if it was built for this call. GIL held.
///
/// # Safety
/// GIL held; `items` the call's argument tuple's items, `n` of them, live.
#[inline(never)]
unsafe fn note_arguments(
    api: &Api,
    st: &ThreadState,
    (callable, family_ctypes, address): (usize, bool, usize),
    (items, from, n): (usize, usize, usize),
    ctx: &mut CallCtx,
    construction: &mut Construction,
) {
    if family_ctypes && super::super::site_rules::is_ctypes_internal(address) {
        // ctypes' own function: its arguments are ctypes' business (see there).
        return;
    }
    for index in from..n {
        // SAFETY: per the contract.
        unsafe {
            let item = api::word(items, 8 * index);
            let ty = api::type_of(item);
            if ty == api.float_type || ty == api.long_type || item == api.none {
                continue;
            }
            let slot = Slot { callable, index };
            let b = item_bytes(api, st, slot, item, family_ctypes, construction);
            ctx.set_arg_bytes(index, b);
        }
    }
}

/// A buffer built for this call and passed to it: its construction is the call's pair's, and so
/// will be its deallocation (`dealloc`).
#[inline(never)]
pub(super) fn file_construction(st: &ThreadState, stats: &CallStats, construction: &Construction) {
    stats.construction_ticks.add(construction.ticks);
    stats.construction_bytes.add(construction.bytes);
    stats.fresh_buffer_calls.add(1);
    st.remember_passed(construction.last, stats);
    super::super::arg_evidence::note_builds(stats, construction.how);
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
