//! The general path of a Python-level call: everything the lean path ([`super::repeated`])
//! does not take — a call that does not repeat the thread's last, one that takes its stack, an
//! excluded pair's, a site whose declarations are missing. See [`general_call`].

use std::sync::atomic::Ordering;

use super::super::api::{self, Api, PyObject, TernaryFunc};
use super::super::arg_bytes::{item_bytes, Construction, Slot};
use super::super::arg_evidence;
use super::super::frames;
use super::repeated::file_construction;
use super::{add_spans, ThreadState};
use crate::record::call_ctx::{CallCtx, ARG_SLOTS, AWAITING_GIL};
use crate::record::clock;
use crate::record::recorder::{CallStats, ThreadRecorder};
use crate::runtime;

/// The call, and what the wrapper found before it chose between [`repeated_call`](super::repeated::repeated_call) and
/// [`general_call`].
pub(super) struct Known {
    pub(super) orig: TernaryFunc,
    pub(super) family_ctypes: bool,
    pub(super) callable: *mut PyObject,
    pub(super) args: *mut PyObject,
    pub(super) kwargs: *mut PyObject,
    pub(super) api: &'static Api,
    pub(super) rec: &'static ThreadRecorder,
    pub(super) sample_stack: bool,
    pub(super) arrived: u64,
    pub(super) pos: Option<frames::Position>,
    pub(super) address: usize,
    pub(super) repeated: Option<&'static CallStats>,
}

/// Every other call: the site found (and its pair looked up) when the call does not repeat the
/// thread's last, the timing decided, every argument's bytes, constructions, the stack.
///
/// # Safety
/// As [`wrapped_call`](super::wrapped_call); `known` found for this call.
#[cold]
#[inline(never)]
pub(super) unsafe fn general_call(known: Known) -> *mut PyObject {
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
        fast: !timed && expect.is_some_and(|s| !s.excluded),
        ..CallCtx::new(
            site.id,
            expect.map_or(std::ptr::null(), |s| s as *const CallStats),
            timed,
            first,
            0,
        )
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
                    family_ctypes && super::super::site_rules::is_ctypes_internal(address)
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
    // SAFETY: the original call, unchanged.
    let (result, t0, t3) = st.run_in(&mut ctx, timed, || unsafe { orig(callable, args, kwargs) });
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
    if family_ctypes && !result.is_null() {
        // SAFETY: set by the ffi_call hook to a leaked CallStats of this thread, or null.
        if let Some(stats) = unsafe { ctx.stats.as_ref() }.filter(|s| arg_evidence::wanted(s)) {
            // SAFETY: GIL held (the call returned), no exception set (it succeeded); the
            // callable and its arguments are the caller's, live until we return.
            unsafe { arg_evidence::look_at(api, stats.site, stats.function, callable, args) };
        }
    }
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
            super::super::binding::note(stats.function, family_ctypes);
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
    (
        unsafe { frames::current_stack(api, &st.last_stack) } + 1,
        gap,
    )
}
