//! leak: objects one function makes that the function retiring them never got.
//!
//! From pointer flow ([`ffiprof_profile::PointerFlow`]), when the profile has it: per allocating
//! function, its objects grouped by the last function each was passed to. The release function is
//! the one most objects end at and are not passed on from (a function that frees is not followed
//! by another use), an object whose address the heap handed out again after it (`reused`: the
//! strongest sign of a free) counting more than one merely not seen again; a name that pairs with
//! the allocator's (`names::release_candidates`) only breaks a tie (see [`release_of`]). Objects
//! ended anywhere else, or never passed, are outstanding; their making sites are `live_sites`.
//!
//! Profiles written before pointer flow was recorded fall back on names: allocation / release pairs
//! found by their words (`names::release_candidates`) whose call counts diverge. The release
//! function counts as existing when the profile saw it called or the library exports it.

mod by_names;

use serde::Serialize;
use serde_json::json;

use super::{names, AdviceKind, Candidate, Confidence, Context, Estimate};
use crate::cost_model::Place;
use ffiprof_profile::{AllocatorFlow, Ending, PointerFlow, SiteCount};

/// Evidence of a leak found from pointer flow (the names are the JSON contract).
#[derive(Debug, Serialize)]
struct FlowEvidence {
    allocator: String,
    release_function: String,
    /// Objects the allocator returned.
    made: u64,
    /// Objects whose last function was the release function.
    released: u64,
    /// Objects ended anywhere else, or never passed to any function.
    outstanding: u64,
    /// Where the outstanding objects were made, most first.
    live_sites: Vec<SiteCount>,
    /// Objects passed to the release function whose address the heap handed out again after it.
    reused_addresses: u64,
    /// Times an object given to the release function was used again after it (0 for a free).
    release_continued: u64,
    /// False for a periodic snapshot: objects may still be released later.
    run_complete: bool,
    /// `run` or `attach`; in attach mode, objects made before the attach are unknown.
    mode: String,
    made_before_attach_unknown: bool,
    /// Counts are estimates from one value in `sample_every` (past the agent's cap).
    sampled: bool,
    sample_every: u64,
}

pub(super) fn rule(ctx: &Context<'_>) -> Vec<Candidate> {
    match &ctx.profile.pointer_flow {
        Some(flow) => flow
            .allocators
            .iter()
            .filter_map(|a| from_flow(ctx, flow, a))
            .collect(),
        None => by_names::by_names(ctx),
    }
}

/// Weight of an object whose address the heap handed out again after a function, against one
/// that merely was not seen after it: the reuse shows the free, but a stray one (an address freed
/// by a path the agent does not see, then taken by an allocation it does not track) must not
/// outweigh many plain ends — PySDL2's `SDL_GameControllerSetPlayerIndex` (1 reused) against
/// `SDL_GameControllerClose` (20 ended).
const REUSE_WEIGHT: u64 = 4;

/// The ending an allocator's objects are retired at, if one qualifies: objects are not passed on
/// from it — none, 2 % allowed, or no more often than addresses were reused after it (a stray
/// reuse puts a little of both on any function) — and it has the most objects ended there, each
/// reused address counting [`REUSE_WEIGHT`]; then no continuation at all; the name
/// (`names::release_candidates`) only breaks a tie.
fn release_of(a: &AllocatorFlow) -> Option<&Ending> {
    let pairs = names::release_candidates(&a.function);
    a.endings
        .iter()
        .filter(|e| e.last.is_some())
        .filter(|e| {
            let ended = e.live + e.reused;
            ended > 0
                && (e.continued.saturating_mul(50) <= ended
                    || (e.reused > 0 && e.continued <= e.reused))
        })
        .max_by_key(|e| {
            let by_name = e.last.as_ref().is_some_and(|l| pairs.contains(&l.function));
            (
                e.reused.saturating_mul(REUSE_WEIGHT) + e.live,
                e.continued == 0,
                by_name,
            )
        })
}

/// Whether `library` is the interpreter itself (libpython, or an executable with it built in):
/// what its functions return through `ctypes.pythonapi` are Python objects, or pointers into
/// them, whose life is reference counting — no C function releases them. pycryptodome's ctypes
/// back end read `PyBytes_AsString` as an allocator "released" by `CTR_encrypt_at` (209 of 366
/// outstanding) and `PyBytes_FromStringAndSize` as one "released" by `PyBytes_AsString`.
fn is_interpreter(library: &str) -> bool {
    let file = library.rsplit('/').next().unwrap_or(library);
    file.starts_with("libpython") || file.starts_with("python") || file.starts_with("libpypy")
}

fn from_flow(ctx: &Context<'_>, flow: &PointerFlow, a: &AllocatorFlow) -> Option<Candidate> {
    if ffiprof_profile::is_ctypes_internal(&a.library, &a.function) || is_interpreter(&a.library) {
        return None;
    }
    // A function that hands out the same live address again without it being passed anywhere
    // in between returns objects it keeps (a getter, a singleton), not new ones.
    let reissued = a
        .endings
        .iter()
        .filter(|e| e.last.is_none())
        .map(|e| e.reused)
        .sum::<u64>();
    if reissued.saturating_mul(20) > a.made {
        return None;
    }
    let release = release_of(a)?;
    // Addresses the allocator handed out again after functions other than the release: its
    // objects die elsewhere too (ownership passed on — llvmlite's target machines to the MCJIT
    // compiler, 19 reused after it against 48 after LLVMPY_DisposeTargetMachine), or it hands
    // out what it keeps (a getter — llvmlite's LLVMPY_GetNamedFunction: 33 reuses spread over ten
    // functions). Either way the pair does not say what leaked: the release must hold nine in ten
    // of the reuses (PySDL2's SDL_FreeSurface holds all 31 047 of SDL_CreateRGBSurface's).
    let all_reused: u64 = a.endings.iter().map(|e| e.reused).sum();
    if release.reused.saturating_mul(10) < all_reused.saturating_mul(9) {
        return None;
    }
    let released = release.live + release.reused;
    let rest: Vec<&Ending> = a
        .endings
        .iter()
        .filter(|e| !std::ptr::eq(*e, release))
        .collect();
    let outstanding: u64 = rest.iter().map(|e| e.live).sum();
    if outstanding < ctx.options.leak_min_outstanding.max(1) {
        return None;
    }
    let mut live_sites: Vec<SiteCount> = Vec::new();
    for s in rest.iter().flat_map(|e| &e.live_sites) {
        match live_sites
            .iter_mut()
            .find(|m| m.file == s.file && m.line == s.line)
        {
            Some(m) => m.count += s.count,
            None => live_sites.push(s.clone()),
        }
    }
    live_sites.sort_by(|x, y| {
        y.count
            .cmp(&x.count)
            .then((x.file.as_str(), x.line).cmp(&(y.file.as_str(), y.line)))
    });
    let function = ctx
        .profile
        .functions
        .iter()
        .find(|f| f.library == a.library && f.function == a.function)?;
    let release_name = release.last.as_ref()?.function.clone();
    let meta = &ctx.profile.meta;
    let complete = meta.complete;
    let attach = meta.mode == "attach";
    let mut confidence = match (complete, release.reused > 0) {
        (true, true) => Confidence::High,
        (true, false) => Confidence::Medium,
        (false, _) => Confidence::Low,
    };
    if attach {
        confidence = confidence.min(Confidence::Medium);
    }
    let sites_text = live_sites
        .iter()
        .take(3)
        .map(|s| format!("{} at {}:{}", s.count, s.file, s.line))
        .collect::<Vec<_>>()
        .join(", ");
    let suggestion = format!(
        "{alloc} made {made} objects{est}; {released} of them reached {release_name}, the function its objects end \
         at{confirm}, and {outstanding} never did{when}{sites}. Release each one when done — try/finally, a \
         context manager, or weakref.finalize on the Python object that owns it.{attach_note}",
        alloc = a.function,
        made = a.made,
        est = if flow.sampled {
            format!(" (counts estimated from one address in {})", flow.sample_every)
        } else {
            String::new()
        },
        confirm = if release.reused > 0 {
            format!(
                " (confirmed: the heap handed {} of their addresses out again after it)",
                release.reused
            )
        } else {
            String::new()
        },
        when = if complete && attach {
            " by the end of the recording"
        } else if complete {
            " by the end of the run"
        } else {
            " so far (snapshot of a running process)"
        },
        sites = if sites_text.is_empty() {
            String::new()
        } else {
            format!(" — made {sites_text}")
        },
        attach_note = if attach {
            " Attached to a running process: objects made before the attach are unknown, and not counted."
        } else {
            ""
        },
    );
    let evidence = FlowEvidence {
        allocator: a.function.clone(),
        release_function: release_name,
        made: a.made,
        released,
        outstanding,
        live_sites,
        reused_addresses: release.reused,
        release_continued: release.continued,
        run_complete: complete,
        mode: meta.mode.clone(),
        made_before_attach_unknown: attach,
        sampled: flow.sampled,
        sample_every: flow.sample_every,
    };
    let place = Place {
        function,
        site: None,
    };
    let rec = ctx.recommendation(
        AdviceKind::Leak,
        place,
        0,
        Estimate::modeled(0.0),
        confidence,
        json!(evidence),
        suggestion,
    );
    Some(Candidate {
        rec,
        correctness: true,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use ffiprof_profile::{AllocatorFlow, Ending, PointerFlow};

    fn lib_fn(name: &str) -> ffiprof_profile::FunctionRef {
        ffiprof_profile::FunctionRef {
            library: LIB.into(),
            function: name.into(),
        }
    }

    /// An ending: objects last passed to `last` (None: never passed), `live` of them from `sites`.
    fn ending(last: Option<&str>, reused: u64, continued: u64, sites: &[(u32, u64)]) -> Ending {
        Ending {
            last: last.map(lib_fn),
            live: sites.iter().map(|s| s.1).sum(),
            reused,
            continued,
            live_sites: sites
                .iter()
                .map(|&(line, count)| ffiprof_profile::SiteCount {
                    file: "app.py".into(),
                    line,
                    function: "main".into(),
                    count,
                })
                .collect(),
        }
    }

    /// A complete run's profile of `allocator` (and the functions its objects went to, called),
    /// with the pointer flow `endings`.
    fn flow_profile(allocator: &str, made: u64, endings: Vec<Ending>) -> Profile {
        let mut fs = vec![counted(allocator, made)];
        for e in &endings {
            if let Some(l) = &e.last {
                fs.push(counted(&l.function, 10));
            }
        }
        let mut p = profile(fs, 1_000_000_000);
        p.meta.complete = true;
        p.meta.mode = "run".into();
        p.pointer_flow = Some(PointerFlow {
            cap: 65536,
            sample_every: 1,
            allocators: vec![AllocatorFlow {
                library: LIB.into(),
                function: allocator.into(),
                made,
                endings,
            }],
            ..PointerFlow::default()
        });
        p
    }

    #[test]
    fn reuses_after_other_functions_say_nothing_leaked() {
        // llvmlite's LLVMPY_GetNamedFunction, a getter: its addresses come back after whatever
        // they were last passed to (ending: last function, reused, continued, live sites).
        let getter = flow_profile(
            "get_named",
            48,
            vec![
                ending(Some("blocks_iter"), 9, 0, &[(5, 2)]),
                ending(Some("value_type"), 5, 3, &[(5, 3)]),
                ending(Some("is_declaration"), 4, 0, &[(5, 2)]),
                ending(Some("print_value"), 2, 3, &[(5, 13)]),
            ],
        );
        assert!(leaks(&getter, &AdviceOptions::default()).is_empty());
        // The same objects with every reuse after one function: that one releases them.
        let allocator = flow_profile(
            "get_named",
            48,
            vec![
                ending(Some("blocks_iter"), 20, 0, &[(5, 2)]),
                ending(Some("value_type"), 0, 3, &[(5, 3)]),
                ending(Some("is_declaration"), 0, 0, &[(5, 2)]),
                ending(Some("print_value"), 0, 3, &[(5, 13)]),
            ],
        );
        let recs = leaks(&allocator, &AdviceOptions::default());
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].evidence["release_function"], "blocks_iter");
    }

    #[test]
    fn the_interpreters_objects_are_no_leaks() {
        // pycryptodome's ctypes back end: a Python bytes object made, passed to a C function,
        // its buffer taken — reference counting frees it, not a C function.
        let mut p = flow_profile(
            "PyBytes_FromStringAndSize",
            366,
            vec![
                ending(Some("PyBytes_AsString"), 40, 0, &[(12, 335)]),
                ending(None, 0, 0, &[(12, 17)]),
            ],
        );
        assert!(
            !leaks(&p, &AdviceOptions::default()).is_empty(),
            "as a library's"
        );
        for library in [
            "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0",
            "/usr/bin/python3.11",
        ] {
            p.pointer_flow.as_mut().unwrap().allocators[0].library = library.into();
            assert!(leaks(&p, &AdviceOptions::default()).is_empty(), "{library}");
        }
    }

    #[test]
    fn the_flow_pairs_verbs_no_word_list_knows() {
        // 2000 leased, each touched; 200 returned (last fx_return), 1800 last touched.
        let p = flow_profile(
            "fx_lease",
            2000,
            vec![
                ending(Some("fx_touch"), 0, 200, &[(29, 1300), (30, 500)]),
                ending(Some("fx_return"), 0, 0, &[(29, 200)]),
            ],
        );
        let recs = leaks(&p, &AdviceOptions::default());
        assert_eq!(recs.len(), 1);
        let e = &recs[0].evidence;
        assert_eq!(e["allocator"], "fx_lease");
        assert_eq!(e["release_function"], "fx_return");
        assert_eq!(
            (
                e["made"].as_u64(),
                e["released"].as_u64(),
                e["outstanding"].as_u64()
            ),
            (Some(2000), Some(200), Some(1800))
        );
        assert_eq!(e["live_sites"][0]["line"], 29);
        assert_eq!(e["live_sites"][0]["count"], 1300);
        assert_eq!(e["live_sites"][1]["count"], 500);
        assert_eq!(recs[0].confidence, Confidence::Medium, "no reused address");
        // Everything returned: no advice.
        let p = flow_profile(
            "fx_lease",
            2000,
            vec![
                ending(Some("fx_touch"), 0, 2000, &[]),
                ending(Some("fx_return"), 0, 0, &[(29, 2000)]),
            ],
        );
        assert!(leaks(&p, &AdviceOptions::default()).is_empty());
    }

    #[test]
    fn reused_addresses_decide_and_raise_confidence() {
        // fx_use ends more objects, but the heap reused addresses only after fx_reap.
        let p = flow_profile(
            "fx_spawn",
            1100,
            vec![
                ending(Some("fx_use"), 0, 0, &[(5, 80)]),
                ending(Some("fx_reap"), 40, 0, &[(5, 10)]),
                ending(None, 0, 0, &[(6, 970)]),
            ],
        );
        let r = &leaks(&p, &AdviceOptions::default())[0];
        assert_eq!(r.evidence["release_function"], "fx_reap");
        assert_eq!(r.evidence["released"], 50);
        assert_eq!(r.evidence["outstanding"], 1050);
        assert_eq!(r.evidence["reused_addresses"], 40);
        assert_eq!(r.confidence, Confidence::High);
    }

    /// PySDL2's joysticks and game controllers (its test suite, traced): SDL_JoystickClose ends 31
    /// objects, 11 of them confirmed by a reused address, but one address freed elsewhere went on
    /// after it; a stray reuse after SDL_MapRGB or SDL_GameControllerSetPlayerIndex (another
    /// object at a reused address) must not win.
    #[test]
    fn reuse_outweighs_a_little_continuation_noise() {
        let p = flow_profile(
            "SDL_JoystickOpen",
            34,
            vec![
                ending(Some("SDL_JoystickName"), 0, 9, &[]),
                ending(Some("SDL_MapRGB"), 1, 0, &[]),
                ending(Some("SDL_JoystickClose"), 11, 1, &[(59, 20)]),
                ending(None, 0, 0, &[(60, 3)]),
            ],
        );
        assert!(
            leaks(&p, &AdviceOptions::default()).is_empty(),
            "3 < 10 outstanding"
        );
        let o = AdviceOptions {
            leak_min_outstanding: 1,
            ..AdviceOptions::default()
        };
        let r = &leaks(&p, &o)[0];
        assert_eq!(r.evidence["release_function"], "SDL_JoystickClose");
        assert_eq!(r.evidence["released"], 31);
        assert_eq!(r.evidence["outstanding"], 3);
        let p = flow_profile(
            "SDL_GameControllerOpen",
            22,
            vec![
                ending(Some("SDL_GameControllerClose"), 0, 0, &[(53, 20)]),
                ending(Some("SDL_GameControllerGetJoystick"), 1, 5, &[]),
                ending(Some("SDL_GameControllerSetPlayerIndex"), 1, 1, &[]),
            ],
        );
        assert!(
            leaks(&p, &o).is_empty(),
            "everything reached SDL_GameControllerClose"
        );
    }

    #[test]
    fn flow_profiles_take_no_advice_from_names_alone() {
        // Names pair fx_obj_new / fx_obj_free, but the flow saw no object reach fx_obj_free.
        let mut p = flow_profile("fx_obj_new", 1000, vec![ending(None, 0, 0, &[(1, 1000)])]);
        p.functions.push(counted("fx_obj_free", 400));
        assert!(leaks(&p, &AdviceOptions::default()).is_empty());
        // A getter handing out the same live address again is no allocator.
        let p = flow_profile(
            "fx_get",
            1000,
            vec![
                ending(None, 900, 0, &[(1, 50)]),
                ending(Some("fx_close"), 0, 0, &[(1, 50)]),
            ],
        );
        assert!(leaks(&p, &AdviceOptions::default()).is_empty());
    }

    #[test]
    fn attach_says_what_it_cannot_know() {
        let mut p = flow_profile(
            "fx_spawn",
            100,
            vec![
                ending(Some("fx_reap"), 10, 0, &[]),
                ending(None, 0, 0, &[(3, 90)]),
            ],
        );
        p.meta.mode = "attach".into();
        let r = &leaks(&p, &AdviceOptions::default())[0];
        assert_eq!(r.evidence["made_before_attach_unknown"], true);
        assert!(
            r.suggestion.contains("before the attach are unknown"),
            "{}",
            r.suggestion
        );
        assert_eq!(r.confidence, Confidence::Medium);
    }
}
