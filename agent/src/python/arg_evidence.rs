//! What ctypes' guessing was given, per (C function, call site): for a function called without
//! `argtypes`, the Python type of each argument (ctypes converts each by its type: an int to a C
//! `int`, bytes to `char *`, None to NULL, a ctypes instance as itself), whether a Python int
//! among them did not fit the 32 bits it was cut to, and whether the result came back through the
//! default `c_int` restype. The analyzer's declare-argtypes advice stands on it. Also how the
//! objects built afresh for a pair's calls were built (an instance of a type made before, an array
//! type looked up per call, a helper such as `create_string_buffer`): which change reusing them is.
//!
//! Never per call: a call of a site whose declarations are missing already takes the wrapper's
//! general path (`call::repeated::takes` refuses it); there, the pair's own call count decides —
//! its first [`FIRST_LOOKED_AT`] calls on a thread, then its 2^k-th — so a pair of n calls is
//! looked at about 8 + log2(n) times, each a few type reads under a lock. Calls of declared
//! functions never come here.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::api::{self, Api, PyObject};
use super::arg_bytes::{passed_as, Passed};
use super::frames;
use crate::record::call_ctx::{BUILT_HELPER, BUILT_INSTANCE, BUILT_TYPE_PER_CALL};
use crate::record::recorder::CallStats;

/// A pair's first calls on a thread that are all looked at.
const FIRST_LOOKED_AT: u64 = 8;
/// Arguments looked at per call (ctypes functions rarely take more).
const MAX_ARGS: usize = 16;
/// Distinct types kept per argument position (the rest are counted in `more`).
const MAX_TYPES: usize = 4;

/// What was seen of one (C function, site) pair.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairEvidence {
    /// The function object had no `argtypes`: its arguments went through ctypes' guessing.
    pub undeclared_argtypes: bool,
    /// Its result was read through the default `c_int` restype (never assigned).
    pub restype_default: bool,
    /// Per argument position, the Python types seen there, in order of first sight (at most
    /// [`MAX_TYPES`]; empty when `argtypes` was declared).
    pub arg_types: Vec<Vec<String>>,
    /// Positions where a Python int outside -2^31..2^32 was passed: its high bits were lost.
    pub truncated_int_args: Vec<u32>,
    /// Calls looked at.
    pub calls: u64,
}

/// Evidence by (site id, C address).
static EVIDENCE: Mutex<Option<HashMap<(u32, usize), PairEvidence>>> = Mutex::new(None);
/// How the objects built afresh for a pair's calls were built (`BUILT_*` bits), by (site id, C
/// address): which change reusing them is (see [`note_builds`]).
static BUILDS: Mutex<Option<HashMap<(u32, usize), u8>>> = Mutex::new(None);

/// A call of the pair `stats` was given objects built for it, as `how` says (`BUILT_*` bits):
/// noted on the pair's such calls 2 to [`FIRST_LOOKED_AT`] on a thread, then its 2^k-th. Not the
/// first: an array type made once before a loop (`T = c_char * n`) is timed with the next
/// construction, which would read as a type made per call.
#[inline(always)]
pub(super) fn note_builds(stats: &CallStats, how: u8) {
    let n = stats.fresh_buffer_calls.get();
    if how != 0 && n >= 2 && (n <= FIRST_LOOKED_AT || n & (n - 1) == 0) {
        note_builds_of(stats.site, stats.function, how);
    }
}

#[cold]
#[inline(never)]
fn note_builds_of(site: u32, function: usize, how: u8) {
    crate::runtime::guard((), || {
        *BUILDS
            .lock()
            .get_or_insert_with(HashMap::new)
            .entry((site, function))
            .or_default() |= how;
    });
}

/// Whether this call of a ctypes pair is one to look at: its site's declarations are missing and
/// the pair's call count on this thread (this call included) is one of those looked at.
#[inline(always)]
pub(super) fn wanted(stats: &CallStats) -> bool {
    let n = stats.python_calls.get();
    stats.site_flags.load(std::sync::atomic::Ordering::Relaxed) != 0
        && (n <= FIRST_LOOKED_AT || n & (n - 1) == 0)
}

/// Looks at the arguments of a call of `callable` (reaching C `function`) made at `site`.
///
/// # Safety
/// GIL held; `callable` the live ctypes function object called, `args` the call's argument tuple
/// (or null), live.
#[cold]
#[inline(never)]
pub(super) unsafe fn look_at(
    api: &Api,
    site: u32,
    function: usize,
    callable: *mut PyObject,
    args: *mut PyObject,
) {
    crate::runtime::guard((), || {
        let key = (site, function);
        let known = EVIDENCE
            .lock()
            .as_ref()
            .is_some_and(|m| m.contains_key(&key));
        // The pair's own declarations, read once: the site's flags are those of the first
        // function called there.
        let declared = if known {
            None
        } else {
            // SAFETY: per the contract.
            Some(unsafe { frames::undeclared(api, callable as usize) })
        };
        // SAFETY: per the contract.
        let seen = unsafe { argument_types(api, args, declared.map(|d| d.0)) };
        let mut guard = EVIDENCE.lock();
        let e = guard
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_default();
        if let Some((argtypes, restype)) = declared {
            e.undeclared_argtypes = argtypes;
            e.restype_default = restype;
        }
        e.calls += 1;
        if !e.undeclared_argtypes {
            return;
        }
        let Some((types, truncated)) = seen else {
            return;
        };
        if e.arg_types.len() < types.len() {
            e.arg_types.resize(types.len(), Vec::new());
        }
        for (have, t) in e.arg_types.iter_mut().zip(types) {
            if !have.contains(&t) && have.len() < MAX_TYPES {
                have.push(t);
            }
        }
        for i in truncated {
            if !e.truncated_int_args.contains(&i) {
                e.truncated_int_args.push(i);
                e.truncated_int_args.sort_unstable();
            }
        }
    });
}

/// The type names of a call's arguments and the positions of ints cut short; None when the
/// arguments are not to be looked at (`undeclared_argtypes` known to be false).
///
/// # Safety
/// GIL held; `args` a live tuple or null.
unsafe fn argument_types(
    api: &Api,
    args: *mut PyObject,
    undeclared_argtypes: Option<bool>,
) -> Option<(Vec<String>, Vec<u32>)> {
    if undeclared_argtypes == Some(false) {
        return None;
    }
    let mut types = Vec::new();
    let mut truncated = Vec::new();
    if args.is_null() {
        return Some((types, truncated));
    }
    // SAFETY: per the contract: ob_size items from `tuple_items`, each live.
    unsafe {
        let items = args as usize + api.layout.tuple_items;
        let n = api::word(args as usize, api::OB_SIZE).min(MAX_ARGS);
        for i in 0..n {
            let item = api::word(items, 8 * i);
            types.push(type_name(api, item));
            if api::type_of(item) == api.long_type && !fits_32_bits(api, item) {
                truncated.push(i as u32);
            }
        }
    }
    Some((types, truncated))
}

/// Whether a Python int survives ctypes' cut to a C `int` bit for bit: -2^31..2^32 (the upper
/// half read back as unsigned by a C `unsigned int`).
///
/// # Safety
/// GIL held; `int` a live Python int.
unsafe fn fits_32_bits(api: &Api, int: usize) -> bool {
    // SAFETY: per the contract; an overflow's exception is cleared.
    unsafe {
        let v = (api.long_as_ssize)(int as *mut PyObject);
        if v == -1 && !(api.err_occurred)().is_null() {
            (api.err_clear)();
            return false; // beyond 64 bits
        }
        (-(1_i64 << 31)..(1_i64 << 32)).contains(&(v as i64))
    }
}

/// How the evidence names an argument's type: `int`, `bool`, `bytes`, `str`, `None` (what ctypes
/// converts by itself), `ctypes:T` for an instance of ctypes type T (passed as itself),
/// `byref:T` for `byref()` of one, else the type's own name (an object converted through its
/// `_as_parameter_`).
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn type_name(api: &Api, obj: usize) -> String {
    // SAFETY: per the contract.
    unsafe {
        if obj == api.none {
            return "None".into();
        }
        match passed_as(api, obj) {
            Passed::CData(o) => format!("ctypes:{}", short_type_name(o)),
            Passed::Byref(0) => "byref:?".into(),
            Passed::Byref(o) => format!("byref:{}", short_type_name(o)),
            Passed::Other => short_type_name(obj),
        }
    }
}

/// `tp_name` of an object's type without its module (`_ctypes.CArgObject` → `CArgObject`).
///
/// # Safety
/// `obj` a live object.
unsafe fn short_type_name(obj: usize) -> String {
    // SAFETY: per the contract.
    let full = unsafe { api::type_name(api::type_of(obj)) };
    match full.rsplit_once('.') {
        Some((_, name)) => name.to_string(),
        None => full,
    }
}

/// The evidence of (site, C address), for the profile.
pub fn evidence(site: u32, function: usize) -> Option<PairEvidence> {
    EVIDENCE.lock().as_ref()?.get(&(site, function)).cloned()
}

/// Puts the evidence of (site, C address `function`) into the site's record.
pub fn fill_site(site: u32, function: usize, rec: &mut ffiprof_profile::SiteRecord) {
    let builds = BUILDS
        .lock()
        .as_ref()
        .and_then(|m| m.get(&(site, function)).copied())
        .unwrap_or(0);
    rec.fresh_buffer_builds = [
        (BUILT_INSTANCE, "instance"),
        (BUILT_TYPE_PER_CALL, "type_per_call"),
        (BUILT_HELPER, "helper"),
    ]
    .iter()
    .filter(|(bit, _)| builds & bit != 0)
    .map(|(_, name)| name.to_string())
    .collect();
    let Some(e) = evidence(site, function) else {
        return;
    };
    rec.arg_types = e.arg_types.iter().map(|alts| alts.join("|")).collect();
    rec.arg_types_calls = if e.undeclared_argtypes { e.calls } else { 0 };
    rec.truncated_int_args = e.truncated_int_args;
    rec.restype_default = e.restype_default;
}

/// Forgets everything seen: a new attach session, or a forked child, starts from nothing (its
/// recorders do too).
pub fn forget() {
    *EVIDENCE.lock() = None;
    *BUILDS.lock() = None;
}

/// [`forget`] in a forked child, where a lock held across the fork would never be released.
pub fn forget_in_child() {
    if let Some(mut g) = EVIDENCE.try_lock() {
        *g = None;
    }
    if let Some(mut g) = BUILDS.try_lock() {
        *g = None;
    }
}
