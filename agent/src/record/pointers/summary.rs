//! The pointer flow as a profile's `pointer_flow`: the live table grouped by (allocator, making
//! site, last function), the per-pair counters, the functions and sites named (off the per-call
//! path, by the snapshotter).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use ffiprof_profile::{
    AllocatorFlow, Ending, Frame, FunctionRef, PointerFlow, SiteCount, TruncatedPointer,
};

use super::super::recorder::{self, CallStats};
use super::{fn_addr, last_of, tables, CAP, FLOW, SHIFT, SKIPPED, TOMB, TRUNC};

/// What the flow tables hold, for a profile: None when no pointer was ever returned or cut.
/// `describe` names function addresses (library, function, excluded by `--lib`), `site` a site id.
pub fn summary(
    describe: impl Fn(&[usize]) -> HashMap<usize, crate::symbols::Described>,
    site: impl Fn(u32) -> Option<Frame>,
) -> Option<PointerFlow> {
    let t = tables()?;
    let shift = SHIFT.load(Ordering::Acquire);
    let weight = 1u64 << shift;
    let mut made: BTreeMap<u16, u64> = BTreeMap::new();
    recorder::each_thread(|r| {
        r.each(|s: &CallStats| {
            let n = s.ptr_made.get();
            if n > 0 {
                *made.entry(s.ptr_fn.load(Ordering::Relaxed)).or_default() += n;
            }
        })
    });
    // (allocator, last) → (live by site, reused, continued)
    type Flow = (BTreeMap<u16, u64>, u64, u64);
    let mut flow: BTreeMap<(u16, u16), Flow> = BTreeMap::new();
    let mut tracked = 0;
    for slot in &t.table {
        if slot.key.load(Ordering::Acquire) > TOMB {
            let e = slot.val.load(Ordering::Acquire);
            let site = (e >> 16) as u16;
            *flow
                .entry((e as u16, last_of(e)))
                .or_default()
                .0
                .entry(site)
                .or_default() += weight;
            tracked += 1;
        }
    }
    let mut truncated: Vec<(u16, u16, u64)> = Vec::new();
    for p in &t.pairs {
        let key = p.key.load(Ordering::Acquire);
        let (a, b) = ((key >> 16) as u16, key as u16);
        match key >> 32 {
            FLOW => {
                let f = flow.entry((a, b)).or_default();
                f.1 += p.first.load(Ordering::Relaxed);
                f.2 += p.second.load(Ordering::Relaxed);
            }
            TRUNC => truncated.push((a, b, p.first.load(Ordering::Relaxed))),
            _ => {}
        }
    }
    if made.is_empty() && flow.is_empty() && truncated.is_empty() {
        return None;
    }
    let mut ids: Vec<u16> = made.keys().copied().collect();
    ids.extend(flow.keys().flat_map(|&(a, b)| [a, b]));
    ids.extend(truncated.iter().flat_map(|&(a, b, _)| [a, b]));
    let addrs: Vec<usize> = ids
        .iter()
        .map(|&i| fn_addr(i))
        .filter(|&a| a != 0)
        .collect();
    let names = describe(&addrs);
    let named = |id: u16| -> Option<(FunctionRef, bool)> {
        names.get(&fn_addr(id)).map(|d| {
            (
                FunctionRef {
                    library: d.library.clone(),
                    function: d.function.clone(),
                },
                d.excluded,
            )
        })
    };
    let mut allocators: BTreeMap<u16, AllocatorFlow> = BTreeMap::new();
    // Whether `id` is an allocator the profile reports (named, not excluded), entered once.
    let enter = |allocators: &mut BTreeMap<u16, AllocatorFlow>, id: u16| -> bool {
        if allocators.contains_key(&id) {
            return true;
        }
        match named(id) {
            Some((f, false)) => {
                allocators.insert(
                    id,
                    AllocatorFlow {
                        library: f.library,
                        function: f.function,
                        made: 0,
                        endings: Vec::new(),
                    },
                );
                true
            }
            _ => false,
        }
    };
    for (&id, &n) in &made {
        if enter(&mut allocators, id) {
            if let Some(a) = allocators.get_mut(&id) {
                a.made += n;
            }
        }
    }
    for ((f, last), (sites, reused, continued)) in flow {
        let last_ref = if last == 0 {
            None
        } else {
            match named(last) {
                Some((r, _)) => Some(r),
                None => continue,
            }
        };
        if !enter(&mut allocators, f) {
            continue;
        }
        let Some(a) = allocators.get_mut(&f) else {
            continue;
        };
        let mut live_sites: Vec<SiteCount> = Vec::new();
        for (s, count) in &sites {
            let frame = site(*s as u32).unwrap_or_else(|| Frame {
                file: "[unknown]".into(),
                function: String::new(),
                line: 0,
            });
            match live_sites
                .iter_mut()
                .find(|c| c.file == frame.file && c.line == frame.line)
            {
                Some(c) => c.count += count,
                None => live_sites.push(SiteCount {
                    file: frame.file,
                    line: frame.line,
                    function: frame.function,
                    count: *count,
                }),
            }
        }
        live_sites.sort_by(|a, b| b.count.cmp(&a.count).then(a.line.cmp(&b.line)));
        a.endings.push(Ending {
            last: last_ref,
            live: sites.values().sum(),
            reused,
            continued,
            live_sites,
        });
    }
    let truncated = truncated
        .into_iter()
        .filter_map(|(f, g, count)| {
            let (func, _) = named(f)?;
            let (passed_to, _) = named(g)?;
            Some(TruncatedPointer {
                library: func.library,
                function: func.function,
                passed_to,
                count,
            })
        })
        .collect();
    Some(PointerFlow {
        cap: CAP as u64,
        sampled: shift > 0,
        sample_every: weight,
        tracked,
        skipped: SKIPPED.load(Ordering::Relaxed),
        allocators: allocators.into_values().collect(),
        truncated,
    })
}
