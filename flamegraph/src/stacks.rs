//! Attribution of a profile's costs to whole stacks: the one place that decides where every call,
//! nanosecond and byte of a function goes, so the folded text, the flamegraph, speedscope and pprof
//! can never disagree with each other or with the profile's own totals.
//!
//! A function's totals are exact; its sites' totals are exact; the stacks at a site are a sample
//! (one call in `stack_sample_every`). So each site's columns are spread over its stacks in
//! proportion to what the stacks saw, and whatever the sites don't account for (calls from C, or
//! Python calls without a site) goes under a root frame of its own.

use std::collections::HashMap;

use ffiprof_profile::{FunctionRecord, Part, Profile, SiteRecord, Split, StackSample};

/// Root frame for functions that no Python code called (C programs, pybind11, cffi API mode).
pub const C_CALLERS: &str = "[C callers]";
/// Root frame for the part of a Python-called function's cost that no call site accounts for.
pub const UNATTRIBUTED: &str = "[unattributed]";

/// The parts of the time split as every rendering draws them, with their labels (folded frame
/// names, speedscope frames, CSS classes): a call's own order — marshal-in, native, marshal-out,
/// GIL wait — and construction, which happens before the call, last.
pub const DRAWN_PARTS: [(Part, &str); 5] = [
    (Part::MarshalIn, "marshal-in"),
    (Part::Native, "native"),
    (Part::MarshalOut, "marshal-out"),
    (Part::GilWait, "gil-wait"),
    (Part::Construction, "construction"),
];

/// The additive columns of a profile, for one stack or one function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Costs {
    pub calls: u64,
    pub time: Split,
    pub arg_bytes: u64,
    pub buffer_bytes: u64,
}

impl Costs {
    /// Boundary time: every part of the split, construction included.
    pub fn total_ns(&self) -> u64 {
        self.time.total()
    }

    pub fn is_zero(&self) -> bool {
        *self == Costs::default()
    }

    pub fn of_function(f: &FunctionRecord) -> Self {
        Costs {
            calls: f.calls,
            time: f.time,
            arg_bytes: f.arg_bytes,
            buffer_bytes: f.buffer_bytes,
        }
    }

    pub fn of_site(s: &SiteRecord) -> Self {
        Costs {
            calls: s.calls,
            time: s.time,
            arg_bytes: s.arg_bytes,
            buffer_bytes: s.buffer_bytes,
        }
    }

    /// Column-wise `self - other`, never below zero: a site can't cost more than its function, and
    /// where rounding in the agent says otherwise, zero is the honest remainder.
    pub fn saturating_sub(&self, o: &Costs) -> Costs {
        Costs {
            calls: self.calls.saturating_sub(o.calls),
            time: self.time.saturating_sub(&o.time),
            arg_bytes: self.arg_bytes.saturating_sub(o.arg_bytes),
            buffer_bytes: self.buffer_bytes.saturating_sub(o.buffer_bytes),
        }
    }

    pub fn add(&mut self, o: &Costs) {
        self.calls += o.calls;
        self.time += o.time;
        self.arg_bytes += o.arg_bytes;
        self.buffer_bytes += o.buffer_bytes;
    }
}

/// Reads one column of a stack's costs (tables of columns in the exporters).
pub type ColumnOf = fn(&Costs) -> u64;

/// One frame of an attributed stack below the C function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKey {
    /// Index into [`Profile::frames`].
    Python(u32),
    /// A call site (function index, site index) that is not the innermost frame of a recorded
    /// stack — the site had no sampled stack, or its stack was cut short.
    Site(u32, u32),
    /// [`C_CALLERS`].
    CCallers,
    /// [`UNATTRIBUTED`].
    Unattributed,
}

/// Where a frame is, for formats that keep names, files and lines apart (speedscope, pprof).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameLocation<'a> {
    pub function: &'a str,
    pub file: &'a str,
    pub line: u32,
}

impl FrameKey {
    /// The frame's function, file and line; roots have no file.
    pub fn location<'a>(&self, profile: &'a Profile) -> FrameLocation<'a> {
        match *self {
            FrameKey::Python(i) => {
                let f = &profile.frames[i as usize];
                FrameLocation {
                    function: &f.function,
                    file: &f.file,
                    line: f.line,
                }
            }
            FrameKey::Site(fi, si) => {
                let s = &profile.functions[fi as usize].sites[si as usize];
                FrameLocation {
                    function: &s.function,
                    file: &s.file,
                    line: s.line,
                }
            }
            FrameKey::CCallers => FrameLocation {
                function: C_CALLERS,
                file: "",
                line: 0,
            },
            FrameKey::Unattributed => FrameLocation {
                function: UNATTRIBUTED,
                file: "",
                line: 0,
            },
        }
    }

    /// The frame as flamegraphs show it: `function (file:line)`, as py-spy names Python frames.
    pub fn name(&self, profile: &Profile) -> String {
        let loc = self.location(profile);
        if loc.file.is_empty() {
            loc.function.to_string()
        } else {
            format!("{} ({}:{})", loc.function, loc.file, loc.line)
        }
    }
}

/// `library!function`, the C frame's name in every view.
pub fn function_name(f: &FunctionRecord) -> String {
    format!("{}!{}", f.library_name(), f.function)
}

/// The costs of one function reached through one Python stack (or a root frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackCost {
    /// Outermost first, ending with the call site.
    pub frames: Vec<FrameKey>,
    /// Index into [`Profile::functions`].
    pub function: usize,
    pub costs: Costs,
}

/// Spreads every function's totals over its sites and their sampled stacks.
///
/// The sum of `costs` over the result equals each function's totals exactly, column by column.
pub fn attribute(profile: &Profile) -> Vec<StackCost> {
    let mut out = Vec::new();
    for (fi, f) in profile.functions.iter().enumerate() {
        let mut covered = Costs::default();
        for (si, site) in f.sites.iter().enumerate() {
            let site_costs = Costs::of_site(site);
            covered.add(&site_costs);
            attribute_site(profile, fi, si, site, &site_costs, &mut out);
        }
        let rest = Costs::of_function(f).saturating_sub(&covered);
        if !rest.is_zero() {
            let root = if f.sites.is_empty() && f.python_calls == 0 {
                FrameKey::CCallers
            } else {
                FrameKey::Unattributed
            };
            out.push(StackCost {
                frames: vec![root],
                function: fi,
                costs: rest,
            });
        }
    }
    out
}

fn attribute_site(
    profile: &Profile,
    fi: usize,
    si: usize,
    site: &SiteRecord,
    total: &Costs,
    out: &mut Vec<StackCost>,
) {
    let site_key = FrameKey::Site(fi as u32, si as u32);
    let samples: Vec<(&StackSample, &Vec<u32>)> = site
        .stacks
        .iter()
        .filter_map(|s| {
            let stack = profile.stacks.get(s.stack as usize)?;
            // A stack naming a frame the table doesn't have is corrupt; the site alone is still true.
            stack
                .iter()
                .all(|&i| (i as usize) < profile.frames.len())
                .then_some((s, stack))
        })
        .collect();
    if samples.is_empty() {
        out.push(StackCost {
            frames: vec![site_key],
            function: fi,
            costs: *total,
        });
        return;
    }
    let calls: Vec<u64> = samples.iter().map(|(s, _)| s.calls).collect();
    let by = |key: &dyn Fn(&StackSample) -> u64, value: u64| -> Vec<u64> {
        let keys: Vec<u64> = samples.iter().map(|(s, _)| key(s)).collect();
        if keys.iter().any(|&k| k > 0) {
            distribute(value, &keys)
        } else {
            distribute(value, &calls)
        }
    };
    let calls_d = distribute(total.calls, &calls);
    let time: Split<Vec<u64>> = Split::from_fn(|p| by(&|s| *s.time.get(p), *total.time.get(p)));
    let args = distribute(total.arg_bytes, &calls);
    let bufs = distribute(total.buffer_bytes, &calls);
    for (k, (_, stack)) in samples.iter().enumerate() {
        let mut frames: Vec<FrameKey> = stack.iter().map(|&i| FrameKey::Python(i)).collect();
        let ends_at_site = stack.last().is_some_and(|&i| {
            let fr = &profile.frames[i as usize];
            fr.file == site.file && fr.line == site.line
        });
        if !ends_at_site {
            frames.push(site_key);
        }
        let costs = Costs {
            calls: calls_d[k],
            time: time.map(|v| v[k]),
            arg_bytes: args[k],
            buffer_bytes: bufs[k],
        };
        if !costs.is_zero() {
            out.push(StackCost {
                frames,
                function: fi,
                costs,
            });
        }
    }
}

/// Splits `total` in proportion to `keys`, exactly: the shares add up to `total` (largest
/// remainders get the leftover units, ties to the earlier key). All-zero keys split evenly.
pub fn distribute(total: u64, keys: &[u64]) -> Vec<u64> {
    if keys.is_empty() {
        return Vec::new();
    }
    let ones;
    let keys = if keys.iter().all(|&k| k == 0) {
        ones = vec![1u64; keys.len()];
        &ones[..]
    } else {
        keys
    };
    let sum: u128 = keys.iter().map(|&k| k as u128).sum();
    let mut shares: Vec<u64> = Vec::with_capacity(keys.len());
    let mut rems: Vec<(u128, usize)> = Vec::with_capacity(keys.len());
    for (i, &k) in keys.iter().enumerate() {
        let exact = total as u128 * k as u128;
        shares.push((exact / sum) as u64);
        rems.push((exact % sum, i));
    }
    let given: u64 = shares.iter().sum();
    let mut left = total - given;
    if left > 0 {
        rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &rems {
            if left == 0 {
                break;
            }
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

/// Interns frame keys in the order a caller first meets them; shared by the exporters.
#[derive(Debug)]
pub(crate) struct Interner<K: std::hash::Hash + Eq + Copy> {
    ids: HashMap<K, u32>,
    pub(crate) keys: Vec<K>,
}

impl<K: std::hash::Hash + Eq + Copy> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            keys: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Interner<K> {
    pub(crate) fn id(&mut self, key: K) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.ids.insert(key, id);
        self.keys.push(key);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribute_is_exact_and_proportional() {
        assert_eq!(distribute(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(distribute(100, &[3, 1]), vec![75, 25]);
        assert_eq!(distribute(7, &[0, 0]), vec![4, 3]);
        assert_eq!(distribute(0, &[5, 5]), vec![0, 0]);
        assert_eq!(
            distribute(u64::MAX, &[u64::MAX, u64::MAX])
                .iter()
                .map(|&x| x as u128)
                .sum::<u128>(),
            u64::MAX as u128
        );
    }
}
