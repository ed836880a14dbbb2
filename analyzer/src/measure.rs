//! The changes the advice can propose, as the CLI times them after a run on the program's own
//! interpreter ([`ffiprof_profile::MeasuredChanges`]), and which of them a profile needs ([`plan`]).
//!
//! Each change is timed untraced, before and after, in a loop that also makes a foreign call (the
//! agent's do-nothing `ffiprof_nop`), on the shape the profile saw:
//!
//! | change | shape | before | after |
//! | --- | --- | --- | --- |
//! | `reuse-type` | bytes `n` (`n@module`: the loops run as module-level code, as the site does) | `b = T(); f(b)`, `T = c_char * n` made once | `f(b)`, `b` built once |
//! | `reuse-array` | bytes `n` | `b = (c_char * n)(); f(b)`, the type looked up per call | `f(b)`, built once |
//! | `reuse-string-buffer` | bytes `n` | `b = create_string_buffer(n); f(b)` | `f(b)`, built once |
//! | `zero-copy` | `d*k` (element code, count) | `f((c_double * k)(*values))` | `f(view)`, a `from_buffer` view made once |
//! | `declare-argtypes` | codes as ctypes guessed them (`i`: a Python int, `P`: anything else; by the sites' argument evidence, else by sizes) | no `argtypes` | `argtypes` declared |
//! | `use-pydll` | signature `dd->d` | the function from a `CDLL` | the same from a `PyDLL` |
//! | `gil-contention` | threads and signature `4:dd->d` | `use-pydll`'s before, its calls shared among that many threads started together | its after, shared alike |
//! | `loop` | element code `d` / `i` | `for i in r: out[i] = xs[i]`, per element | one call over all elements (through `from_buffer` views), per element |
//!
//! The three `reuse-*` changes also time the building alone (`own_ns`): what a probe around it
//! sees, which tells which of them a profile's construction was.
//!
//! `gil-contention` is `use-pydll` in the shape of a program whose threads call: with other threads
//! waiting for the GIL, each release signals a waiter (and at times wakes one, which then contends
//! for the GIL's mutex), so a release and re-acquisition costs more than in one thread — on
//! CPython 3.11 and 3.12 alike ~1.1-1.5x here, moving with the machine's load, which no
//! single-thread figure shows. Timed with the threads the profile saw calling (at most
//! [`MAX_THREADS`]).
//!
//! `loop` is the loop around a per-element call without the call itself — reading an element,
//! storing a result: what batching removes besides the crossings, which the profile measured. Its
//! `before_ns` is what such a loop costs per element, which reuse-buffer subtracts from a site's gap.
//!
//! Each side of a round is timed back to back with the other, and the saving is taken over the
//! least disturbed rounds (`src/measure_changes.py`). A measurement whose spread exceeds its
//! saving (and 10 ns) says nothing either way: it is [inconclusive](conclusive), used by no
//! estimate and not cached, so the next run times it again.
//!
//! Signatures are read from the sizes the profile recorded (the libffi cif's): a 4-byte argument is
//! timed as a C `int` (`i`), an 8-byte one as a `double` (`d`); a signature with other sizes, or with
//! sizes that varied from call to call, is not timed, and its advice stays modeled.

use std::collections::BTreeMap;

use ffiprof_profile::{ChangeMeasurement, FunctionRecord, Profile};
use serde::{Deserialize, Serialize};

use crate::advice::AdviceOptions;
use crate::cost_model::{per, python_places, Place};

pub const REUSE_TYPE: &str = "reuse-type";
pub const REUSE_ARRAY: &str = "reuse-array";
pub const REUSE_STRING_BUFFER: &str = "reuse-string-buffer";
pub const ZERO_COPY: &str = "zero-copy";
pub const DECLARE_ARGTYPES: &str = "declare-argtypes";
pub const USE_PYDLL: &str = "use-pydll";
pub const GIL_CONTENTION: &str = "gil-contention";
pub const LOOP: &str = "loop";

/// `gil-contention` is timed with at most this many threads (as `measure_changes.py` accepts).
pub const MAX_THREADS: u32 = 8;

/// The threads that called `f` from Python, where the profile recorded them; else every thread
/// the profile saw (a profile written before the count).
pub fn calling_threads(profile: &Profile, f: &FunctionRecord) -> u32 {
    if f.calling_threads > 0 {
        f.calling_threads.min(u32::MAX as u64) as u32
    } else {
        profile.meta.threads
    }
}

/// The shape `gil-contention` is timed on: the threads the profile saw calling (at most
/// [`MAX_THREADS`]) and the calls' signature, `4:d->d`.
pub fn contention_shape(threads: u32, signature: &str) -> String {
    format!("{}:{signature}", threads.clamp(2, MAX_THREADS))
}

/// At most this many shapes are timed after one run (the most valuable first): with the step's
/// budget of ~2 s, each gets ~0.17 s.
pub const MAX_REQUESTS: usize = 10;

/// One change to time on one shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Request {
    pub change: String,
    pub shape: String,
}

impl Request {
    fn new(change: &str, shape: impl Into<String>) -> Self {
        Self {
            change: change.to_string(),
            shape: shape.into(),
        }
    }
}

/// The argument sizes of a place's calls split into 4- and 8-byte arguments, when every call had
/// the same `arity` arguments of those sizes: (4-byte count, 8-byte count).
fn size_split(arg_bytes: u64, calls: u64, arity: u32) -> Option<(u32, u32)> {
    if calls == 0 || !arg_bytes.is_multiple_of(calls) {
        return None;
    }
    let per_call = arg_bytes / calls;
    let k = u64::from(arity);
    if per_call < 4 * k || per_call > 8 * k || !(per_call - 4 * k).is_multiple_of(4) {
        return None;
    }
    let wide = (per_call - 4 * k) / 4;
    Some(((k - wide) as u32, wide as u32))
}

/// The argument bytes and calls of a place (its site's when it has one).
fn arg_figures(place: &Place<'_>) -> (u64, u64) {
    match place.site {
        Some(s) => (s.arg_bytes, s.calls),
        None => (place.function.arg_bytes, place.function.calls),
    }
}

/// The arguments of a function called without `argtypes`, as ctypes converted them: `i` for each
/// 4-byte argument (what ctypes makes of a Python int: a C `int`), `P` for each 8-byte one (a
/// bytes or str object, None, or a ctypes object passed as itself); 4-byte ones first, since the
/// profile does not know the order. `None` when the sizes varied or are of other kinds.
pub fn guessed_args(place: &Place<'_>) -> Option<String> {
    let (bytes, calls) = arg_figures(place);
    let (narrow, wide) = size_split(bytes, calls, place.function.arg_count)?;
    Some("i".repeat(narrow as usize) + &"P".repeat(wide as usize))
}

/// The result's code: none, `i` (4 bytes) or `d` (8 bytes); `None` for other sizes.
fn result_code(f: &FunctionRecord) -> Option<&'static str> {
    if f.calls == 0 || !f.ret_bytes.is_multiple_of(f.calls) {
        return None;
    }
    match f.ret_bytes / f.calls {
        0 => Some(""),
        4 => Some("i"),
        8 => Some("d"),
        _ => None,
    }
}

/// The signature a place's calls are timed with: `i` per 4-byte argument, `d` per 8-byte one,
/// `->`, the result's code (`dd->d`). `None` when the sizes do not allow it.
pub fn signature(place: &Place<'_>) -> Option<String> {
    let (bytes, calls) = arg_figures(place);
    let (narrow, wide) = size_split(bytes, calls, place.function.arg_count)?;
    let ret = result_code(place.function)?;
    Some(format!(
        "{}{}->{ret}",
        "i".repeat(narrow as usize),
        "d".repeat(wide as usize)
    ))
}

/// The element code of a batched loop over a place's calls: its first argument's (`d` for 8
/// bytes, `i` for 4), `i` without arguments.
pub fn element_code(signature: &str) -> &'static str {
    if signature.starts_with('d') {
        "d"
    } else {
        "i"
    }
}

/// The shape the `reuse-*` changes are timed on for objects of `bytes` bytes built at `place`:
/// the size, with `@module` when the site is a script's top level (`<module>`), whose names are
/// looked up in a dict: there the statement that builds the object costs more — measured by
/// scripts/construction-in-context, ~478 ns against ~278 ns in a function for a 4 KiB array on
/// CPython 3.12 — and reusing it saves that much more.
pub fn reuse_shape(bytes: u64, place: &Place<'_>) -> String {
    if place.site.is_some_and(|s| s.function == "<module>") {
        format!("{bytes}@module")
    } else {
        bytes.to_string()
    }
}

/// The shape `zero-copy` is timed on for buffers of `bytes` bytes: doubles when they divide, else
/// 4-byte ints.
pub fn zero_copy_shape(bytes: u64) -> String {
    if bytes.is_multiple_of(8) {
        format!("d*{}", bytes / 8)
    } else {
        format!("i*{}", bytes.div_ceil(4))
    }
}

/// Whether a place's construction converts Python values one by one (zero-copy) rather than
/// building empty or small objects (reuse-buffer): the analyzer's own criterion.
pub fn converts_values(
    options: &AdviceOptions,
    construction_ns: u64,
    bytes: u64,
    fresh: u64,
) -> bool {
    let per_buffer = bytes.checked_div(fresh).unwrap_or(0);
    bytes > 0
        && per(construction_ns, bytes) >= options.zero_copy_min_ns_per_byte
        && per_buffer >= options.zero_copy_min_bytes
}

/// The shapes the advice for `profile` can use, most valuable first (by the time at stake), at
/// most [`MAX_REQUESTS`]; what a profile without Python calls needs is nothing.
pub fn plan(profile: &Profile, options: &AdviceOptions) -> Vec<Request> {
    let mut wanted: BTreeMap<Request, u64> = BTreeMap::new();
    let mut want = |r: Request, stake: u64| {
        let e = wanted.entry(r).or_insert(0);
        *e = (*e).max(stake);
    };
    for place in python_places(profile) {
        let m = place.measured();
        let sig = signature(&place);
        let fresh = m.fresh_buffer_calls.min(m.calls);
        if fresh >= 2 && m.time.construction > 0 {
            let stake = m.time.construction;
            let n = m.construction_bytes / fresh;
            if converts_values(options, m.time.construction, m.construction_bytes, fresh) {
                want(Request::new(ZERO_COPY, zero_copy_shape(n)), stake);
            } else {
                let shape = reuse_shape(n, &place);
                want(Request::new(REUSE_TYPE, shape.clone()), stake);
                want(Request::new(REUSE_ARRAY, shape.clone()), stake);
                want(Request::new(REUSE_STRING_BUFFER, shape), stake);
                want(Request::new(LOOP, "i"), stake);
            }
        }
        let overhead = m.overhead_per_call_ns();
        if m.calls >= 2
            && overhead > 0.0
            && overhead >= options.batch_min_overhead_ratio * m.native_per_call_ns()
        {
            if let Some(s) = &sig {
                want(Request::new(LOOP, element_code(s)), m.overhead_ns());
            }
        }
    }
    for f in &profile.functions {
        if f.python_calls == 0 {
            continue;
        }
        let place = Place {
            function: f,
            site: None,
        };
        // use-pydll in one thread; gil-contention in several, timed with as many threads.
        if f.time.gil_wait > 0 {
            if let Some(s) = signature(&place) {
                let r = match (profile.meta.threads, calling_threads(profile, f)) {
                    (0 | 1, _) => Some(Request::new(USE_PYDLL, s)),
                    // Other threads, one caller: no contention among callers to time.
                    (_, 0 | 1) => None,
                    (_, t) => Some(Request::new(GIL_CONTENTION, contention_shape(t, &s))),
                };
                if let Some(r) = r {
                    want(r, f.time.overhead());
                }
            }
        }
        if f.undeclared_argtypes_calls > 0 {
            if let Some(codes) = crate::advice::declare_argtypes_codes(f) {
                // What declaring would change, at the ~100 ns a call DESIGN.md's table shows.
                want(
                    Request::new(DECLARE_ARGTYPES, codes),
                    f.undeclared_argtypes_calls.saturating_mul(100),
                );
            }
        }
    }
    let min = options.min_savings_ns;
    let mut list: Vec<(Request, u64)> = wanted.into_iter().filter(|(_, s)| *s >= min).collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list.truncate(MAX_REQUESTS);
    list.into_iter().map(|(r, _)| r).collect()
}

/// A measured change as the advice uses it: per-call saving and spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timed {
    pub saving_ns: f64,
    pub spread_ns: f64,
}

impl From<&ChangeMeasurement> for Timed {
    fn from(m: &ChangeMeasurement) -> Self {
        Self {
            saving_ns: m.saving_ns,
            spread_ns: m.spread_ns,
        }
    }
}

/// Whether a measurement says anything: a spread larger than the saving (and than 10 ns, the
/// timer's and the loop's own jitter) leaves even its sign open.
pub fn conclusive(m: &ChangeMeasurement) -> bool {
    m.spread_ns <= m.saving_ns.abs().max(10.0)
}

/// The loop overhead per element that batching removes besides the calls (`loop` on the
/// element code of `signature`), when measured conclusively; never negative.
pub fn loop_overhead(profile: &Profile, signature: &str) -> Option<Timed> {
    timed(profile, LOOP, element_code(signature)).map(|t| Timed {
        saving_ns: t.saving_ns.max(0.0),
        ..t
    })
}

/// What a loop around a call costs per element besides the call (`loop`'s `before_ns`, on ints),
/// when measured conclusively.
pub fn loop_time(profile: &Profile) -> Option<Timed> {
    let m = profile.measured_changes.as_ref()?.get(LOOP, "i")?;
    conclusive(m).then_some(Timed {
        saving_ns: m.before_ns,
        spread_ns: m.spread_ns,
    })
}

/// The conclusive measurement of `change` on `shape`, if the profile has one.
pub fn measurement<'a>(
    profile: &'a Profile,
    change: &str,
    shape: &str,
) -> Option<&'a ChangeMeasurement> {
    profile
        .measured_changes
        .as_ref()?
        .get(change, shape)
        .filter(|m| conclusive(m))
}

/// The conclusive measured saving of `change` on `shape`, if the profile has one.
pub fn timed(profile: &Profile, change: &str, shape: &str) -> Option<Timed> {
    profile
        .measured_changes
        .as_ref()?
        .get(change, shape)
        .filter(|m| conclusive(m))
        .map(Timed::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffiprof_profile::SiteRecord;

    fn f(arity: u32, arg_bytes: u64, ret_bytes: u64, calls: u64) -> FunctionRecord {
        let mut f = FunctionRecord::new("/l/libx.so", "f");
        f.arg_count = arity;
        f.arg_bytes = arg_bytes;
        f.ret_bytes = ret_bytes;
        f.calls = calls;
        f.python_calls = calls;
        f
    }

    #[test]
    fn signatures_from_sizes() {
        let g = f(3, 20 * 10, 8 * 10, 10);
        let p = Place {
            function: &g,
            site: None,
        };
        // 20 bytes in 3 arguments: one of 4 bytes, two of 8.
        assert_eq!(signature(&p).as_deref(), Some("idd->d"));
        assert_eq!(guessed_args(&p).as_deref(), Some("iPP"));
        let g = f(2, 8 * 10, 0, 10);
        let p = Place {
            function: &g,
            site: None,
        };
        assert_eq!(signature(&p).as_deref(), Some("ii->"));
        // Sizes that vary from call to call, a 16-byte struct, an odd result: no shape.
        for g in [
            f(2, 8 * 10 + 4, 0, 10),
            f(1, 16 * 10, 0, 10),
            f(1, 80, 2 * 10, 10),
        ] {
            let p = Place {
                function: &g,
                site: None,
            };
            assert_eq!(signature(&p), None, "{g:?}");
        }
        // A site's own sizes count.
        let g = f(1, 0, 0, 10);
        let s = SiteRecord {
            calls: 4,
            arg_bytes: 16,
            ..SiteRecord::default()
        };
        let p = Place {
            function: &g,
            site: Some(&s),
        };
        assert_eq!(guessed_args(&p).as_deref(), Some("i"));
    }

    #[test]
    fn reuse_is_timed_in_the_sites_scope() {
        let g = f(1, 8, 0, 1);
        let mut s = SiteRecord {
            function: "<module>".into(),
            ..SiteRecord::default()
        };
        let at = |s: &SiteRecord| {
            reuse_shape(
                4096,
                &Place {
                    function: &g,
                    site: Some(s),
                },
            )
        };
        assert_eq!(at(&s), "4096@module");
        s.function = "step".into();
        assert_eq!(at(&s), "4096");
        let whole = Place {
            function: &g,
            site: None,
        };
        assert_eq!(reuse_shape(64, &whole), "64");
    }

    #[test]
    fn zero_copy_shapes() {
        assert_eq!(zero_copy_shape(8000), "d*1000");
        assert_eq!(zero_copy_shape(4004), "i*1001");
    }
}
