//! The leak rule of profiles without pointer flow (written before it was recorded): allocation /
//! release pairs found by their names' words (`names::release_candidates`) whose call counts diverge.
//! The release function counts as existing when the profile saw it called or the library exports it;
//! a release never called is absent from the profile, so without the exports list only partly-released
//! objects can be noticed.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::super::{names, AdviceKind, Candidate, Confidence, Context, Estimate};
use crate::cost_model::Place;
use ffiprof_profile::FunctionRecord;

#[derive(Debug, Serialize)]
struct LeakEvidence {
    allocators: BTreeMap<String, u64>,
    release_function: String,
    release_calls: u64,
    outstanding: u64,
    /// False for a periodic snapshot: objects may still be released later.
    run_complete: bool,
}

/// Profiles without pointer flow (written before it was recorded): pairs by name.
pub(super) fn by_names(ctx: &Context<'_>) -> Vec<Candidate> {
    // (library, release function) → allocators that it undoes.
    let mut groups: BTreeMap<(&str, String), Vec<&FunctionRecord>> = BTreeMap::new();
    for f in &ctx.profile.functions {
        let known = ctx.known_names(&f.library);
        if let Some(release) = names::release_candidates(&f.function)
            .into_iter()
            .find(|c| known.contains(&c.as_str()))
        {
            groups
                .entry((f.library.as_str(), release))
                .or_default()
                .push(f);
        }
    }
    let complete = ctx.profile.meta.complete;
    let mut out = Vec::new();
    for ((library, release), allocators) in groups {
        let allocated: u64 = allocators.iter().map(|f| f.calls).sum();
        let release_calls = ctx
            .profile
            .functions
            .iter()
            .find(|f| f.library == library && f.function == release)
            .map_or(0, |f| f.calls);
        let outstanding = allocated.saturating_sub(release_calls);
        if outstanding < ctx.options.leak_min_outstanding.max(1) {
            continue;
        }
        let confidence = match (complete, outstanding * 2 >= allocated) {
            (true, true) => Confidence::High,
            (true, false) => Confidence::Medium,
            (false, _) => Confidence::Low,
        };
        // Name the busiest allocator; the evidence lists them all.
        let main = allocators
            .iter()
            .max_by_key(|f| f.calls)
            .copied()
            .unwrap_or(allocators[0]);
        let alloc_names: Vec<&str> = allocators.iter().map(|f| f.function.as_str()).collect();
        let suggestion = format!(
            "{} made {allocated} objects but {release} was called {release_calls} times: {outstanding} were never \
             released{}. Release each one when done — try/finally, a context manager, or weakref.finalize on \
             the Python object that owns it.",
            alloc_names.join(" + "),
            if complete { " by the end of the run" } else { " so far (snapshot of a running process)" },
        );
        let evidence = LeakEvidence {
            allocators: allocators
                .iter()
                .map(|f| (f.function.clone(), f.calls))
                .collect(),
            release_function: release.clone(),
            release_calls,
            outstanding,
            run_complete: complete,
        };
        let place = Place {
            function: main,
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
        out.push(Candidate {
            rec,
            correctness: true,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::testutil::*;
    use super::super::super::*;

    #[test]
    fn diverging_counts_are_a_leak() {
        let p = profile(
            vec![counted("fx_obj_new", 1_000), counted("fx_obj_free", 400)],
            1_000_000_000,
        );
        let recs = leaks(&p, &AdviceOptions::default());
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.function, "fx_obj_new");
        assert_eq!(r.evidence["outstanding"], 600);
        assert_eq!(r.evidence["release_function"], "fx_obj_free");
        assert_eq!(r.confidence, Confidence::High);
        assert_eq!(r.estimated_savings_ns, 0);
    }

    #[test]
    fn balanced_pairs_and_unknown_partners_are_not() {
        let p = profile(
            vec![counted("fx_obj_new", 1_000), counted("fx_obj_free", 995)],
            1_000_000_000,
        );
        assert!(leaks(&p, &AdviceOptions::default()).is_empty());
        // The release function was never called and the exports are unknown: nothing to compare with.
        let p = profile(vec![counted("fx_obj_new", 1_000)], 1_000_000_000);
        assert!(leaks(&p, &AdviceOptions::default()).is_empty());
    }

    #[test]
    fn exported_but_never_called_release_counts_as_zero() {
        let p = profile(
            vec![counted("fx_buf_alloc", 50), counted("fx_buf_calloc", 5)],
            1_000_000_000,
        );
        let o = AdviceOptions::default().with_exported_symbols(LIB, vec!["fx_buf_free".into()]);
        let r = &leaks(&p, &o)[0];
        assert_eq!(r.evidence["release_calls"], 0);
        // Both allocators are undone by fx_buf_free.
        assert_eq!(r.evidence["outstanding"], 55);
        assert_eq!(r.evidence["allocators"]["fx_buf_calloc"], 5);
        assert_eq!(r.function, "fx_buf_alloc");
    }

    #[test]
    fn allocators_sharing_a_release_are_summed_and_snapshots_are_low() {
        let mut p = profile(
            vec![
                counted("xmalloc", 10),
                counted("calloc", 30),
                counted("malloc", 50),
                counted("free", 60),
            ],
            1_000_000_000,
        );
        p.meta.complete = false;
        let r = &leaks(&p, &AdviceOptions::default())[0];
        // malloc and calloc share free (xmalloc has no partner word); 80 - 60 = 20.
        assert_eq!(r.evidence["outstanding"], 20);
        assert_eq!(r.evidence["allocators"]["calloc"], 30);
        assert_eq!(r.confidence, Confidence::Low);
    }
}
