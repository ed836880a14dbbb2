//! Folded stacks (`frame;frame;frame weight` per line), the input of inferno and Brendan Gregg's
//! FlameGraph, and the form every flamegraph here is drawn from.
//!
//! A line reads outermost Python frame → call site → `library!function` → part of the split:
//!
//! ```text
//! main (app.py:3);step (app.py:12);libm.so.6!cos;marshal-in 2150
//! main (app.py:3);step (app.py:12);construction 880
//! [C callers];libfoo.so!foo_init;native 120
//! ```
//!
//! Construction is a sibling of the C function under the call site, not a part of it: it happens
//! before the call, in the caller's code, and the fix (reuse the buffer) is made there.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use ffiprof_profile::{Part, Profile};

use crate::stacks::{attribute, function_name, Costs, FrameKey, DRAWN_PARTS};

/// What a frame's width stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weight {
    /// Boundary time in nanoseconds, split into marshal-in / native / marshal-out / gil-wait
    /// (and construction at the call site).
    #[default]
    Time,
    /// Number of boundary calls; the C function is the leaf.
    Calls,
    /// Bytes that crossed: `arg-bytes` (C argument values) and `buffer-bytes` (memory behind pointers).
    Bytes,
}

impl Weight {
    /// The unit inferno prints after each count.
    pub fn unit(&self) -> &'static str {
        match self {
            Weight::Time => "ns",
            Weight::Calls => "calls",
            Weight::Bytes => "bytes",
        }
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Weight::Time => "time",
            Weight::Calls => "calls",
            Weight::Bytes => "bytes",
        })
    }
}

/// The weight name was not `time`, `calls` or `bytes`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown weight `{0}`: expected time, calls or bytes")]
pub struct UnknownWeight(pub String);

impl FromStr for Weight {
    type Err = UnknownWeight;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "time" | "ns" => Ok(Weight::Time),
            "calls" => Ok(Weight::Calls),
            "bytes" => Ok(Weight::Bytes),
            other => Err(UnknownWeight(other.to_string())),
        }
    }
}

/// Options for [`fold`].
#[derive(Debug, Clone, Default)]
pub struct FoldOptions {
    pub weight: Weight,
}

/// Top-level frame that stands for stacks too thin to draw, in a pruned flamegraph.
pub const NARROW: &str = "[narrow stacks]";

/// The names of the leaf frames below a C function, in drawing order.
pub const PART_NAMES: [&str; 5] = [
    "marshal-in",
    "native",
    "marshal-out",
    "gil-wait",
    "construction",
];

/// Folded stacks: interned frame names (sorted, so id order is name order) and merged lines
/// sorted frame by frame, which keeps every subtree contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folded {
    pub weight: Weight,
    names: Vec<String>,
    lines: Vec<(Vec<u32>, u64)>,
}

/// What [`Folded::pruned_lines`] kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Folded lines, in trie order (every subtree contiguous).
    pub lines: Vec<String>,
    /// Frames that will be drawn.
    pub frames: usize,
    /// Frames folded into their parents (or the narrow root).
    pub dropped: usize,
}

/// The key a frame is interned by while folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    Frame(FrameKey),
    Function(usize),
    Part(&'static str),
}

/// Builds the folded stacks of a profile.
pub fn fold(profile: &Profile, options: &FoldOptions) -> Folded {
    let attributed = attribute(profile);
    let mut interner = crate::stacks::Interner::<Node>::default();
    // Collected raw and merged by sorting (in from_parts): cheaper than hashing 100k+ long keys.
    let mut raw: Vec<(Vec<u32>, u64)> = Vec::with_capacity(attributed.len() * 4);
    let mut emit = |prefix: &[u32],
                    tail: &[Node],
                    value: u64,
                    interner: &mut crate::stacks::Interner<Node>| {
        if value == 0 {
            return;
        }
        let mut key = Vec::with_capacity(prefix.len() + tail.len());
        key.extend_from_slice(prefix);
        key.extend(tail.iter().map(|n| interner.id(*n)));
        raw.push((key, value));
    };
    for sc in &attributed {
        let prefix: Vec<u32> = sc
            .frames
            .iter()
            .map(|k| interner.id(Node::Frame(*k)))
            .collect();
        let func = Node::Function(sc.function);
        let c: &Costs = &sc.costs;
        match options.weight {
            Weight::Time => {
                for (part, label) in DRAWN_PARTS {
                    // Construction is the call site's, beside the C function (see above).
                    let tail: &[Node] = if part == Part::Construction {
                        &[Node::Part(label)]
                    } else {
                        &[func, Node::Part(label)]
                    };
                    emit(&prefix, tail, *c.time.get(part), &mut interner);
                }
            }
            Weight::Calls => emit(&prefix, &[func], c.calls, &mut interner),
            Weight::Bytes => {
                emit(
                    &prefix,
                    &[func, Node::Part("arg-bytes")],
                    c.arg_bytes,
                    &mut interner,
                );
                emit(
                    &prefix,
                    &[func, Node::Part("buffer-bytes")],
                    c.buffer_bytes,
                    &mut interner,
                );
            }
        }
    }
    let raw_names: Vec<String> = interner
        .keys
        .iter()
        .map(|n| {
            sanitize(&match *n {
                Node::Frame(k) => k.name(profile),
                Node::Function(fi) => function_name(&profile.functions[fi]),
                Node::Part(p) => p.to_string(),
            })
        })
        .collect();
    Folded::from_parts(options.weight, raw_names, raw)
}

/// Makes a name safe for the folded format: `;` separates frames and the line ends the stack.
fn sanitize(name: &str) -> String {
    if name.contains([';', '\n', '\r']) {
        name.replace(';', ":").replace(['\n', '\r'], " ")
    } else {
        name.to_string()
    }
}

impl Folded {
    /// Re-numbers names so that id order is name order, merges names that became equal, and sorts.
    fn from_parts(
        weight: Weight,
        raw_names: Vec<String>,
        mut lines: Vec<(Vec<u32>, u64)>,
    ) -> Folded {
        let mut order: Vec<u32> = (0..raw_names.len() as u32).collect();
        order.sort_by(|&a, &b| raw_names[a as usize].cmp(&raw_names[b as usize]));
        let mut remap = vec![0u32; raw_names.len()];
        let mut names: Vec<String> = Vec::new();
        for &old in &order {
            let name = &raw_names[old as usize];
            if names.last() != Some(name) {
                names.push(name.clone());
            }
            remap[old as usize] = (names.len() - 1) as u32;
        }
        for (k, _) in &mut lines {
            for id in k.iter_mut() {
                *id = remap[*id as usize];
            }
        }
        lines.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Equal stacks are now adjacent: add them up.
        let mut merged: Vec<(Vec<u32>, u64)> = Vec::with_capacity(lines.len());
        for (k, v) in lines {
            match merged.last_mut() {
                Some(last) if last.0 == k => last.1 += v,
                _ => merged.push((k, v)),
            }
        }
        Folded {
            weight,
            names,
            lines: merged,
        }
    }

    /// Every distinct frame name, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Parses folded text (as written by [`Folded::to_text`] or any collapse tool); lines that
    /// don't end in a count are skipped.
    pub fn parse(weight: Weight, text: &str) -> Folded {
        let mut interner = crate::stacks::Interner::<usize>::default();
        let mut strings: Vec<String> = Vec::new();
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut raw: Vec<(Vec<u32>, u64)> = Vec::new();
        for line in text.lines() {
            let Some((stack, count)) = line.trim_end().rsplit_once(' ') else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            let key: Vec<u32> = stack
                .split(';')
                .map(|name| {
                    let idx = *by_name.entry(name).or_insert_with(|| {
                        strings.push(name.to_string());
                        strings.len() - 1
                    });
                    interner.id(idx)
                })
                .collect();
            raw.push((key, count));
        }
        let raw_names = interner.keys.iter().map(|&i| strings[i].clone()).collect();
        Folded::from_parts(weight, raw_names, raw)
    }

    /// Sum of all weights (the root frame's width).
    pub fn total(&self) -> u64 {
        self.lines.iter().map(|l| l.1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Every stack as frame names (outermost first) and its weight, in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (Vec<&str>, u64)> + '_ {
        self.lines.iter().map(|(k, v)| {
            (
                k.iter().map(|&i| self.names[i as usize].as_str()).collect(),
                *v,
            )
        })
    }

    /// The folded text, one `stack weight` line per stack, sorted, ending in a newline.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.lines {
            self.push_line(&mut out, k, *v);
        }
        out
    }

    fn push_line(&self, out: &mut String, key: &[u32], value: u64) {
        for (i, &id) in key.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(&self.names[id as usize]);
        }
        out.push(' ');
        out.push_str(&value.to_string());
        out.push('\n');
    }

    /// The lines to draw: frames (with their subtrees) narrower than `min_fraction` of the total
    /// are folded into their parent, which is what inferno would do with them anyway (it skips
    /// frames under its `min_width` percentage) — but inferno no longer has to parse them. This is
    /// what keeps a 100k-stack profile fast to draw. When more than `max_frames` frames would still
    /// be drawn, the narrowest go too, so the SVG (and the page that inlines it) stays a size a
    /// browser opens quickly.
    pub fn pruned_lines(&self, min_fraction: f64, max_frames: usize) -> Pruned {
        // Lines are sorted frame by frame, so a pre-order trie falls out of comparing each line with
        // the previous one.
        struct TrieNode {
            name: u32,
            parent: usize,
            depth: usize,
            own: u64,
            total: u64,
        }
        let mut nodes: Vec<TrieNode> = vec![TrieNode {
            name: u32::MAX,
            parent: 0,
            depth: 0,
            own: 0,
            total: 0,
        }];
        let mut path: Vec<usize> = vec![0];
        let mut prev: &[u32] = &[];
        for (k, v) in &self.lines {
            let common = prev
                .iter()
                .zip(k.iter())
                .take_while(|(a, b)| a == b)
                .count();
            path.truncate(common + 1);
            for &name in &k[common..] {
                let parent = *path.last().expect("root is always on the path");
                nodes.push(TrieNode {
                    name,
                    parent,
                    depth: path.len(),
                    own: 0,
                    total: 0,
                });
                path.push(nodes.len() - 1);
            }
            let leaf = *path.last().expect("root is always on the path");
            nodes[leaf].own += v;
            prev = k;
        }
        for i in (1..nodes.len()).rev() {
            let t = nodes[i].total + nodes[i].own;
            nodes[i].total = t;
            let p = nodes[i].parent;
            nodes[p].total += t;
        }
        let mut threshold = (nodes[0].total as f64 * min_fraction).max(0.0);
        let mut strict = false;
        if nodes.len() - 1 > max_frames && max_frames > 0 {
            // A set of "total >= t" is closed under ancestors (a parent is never narrower than its
            // child), so the k-th widest total is exactly the cut that keeps k frames (bar ties).
            let mut totals: Vec<u64> = nodes[1..].iter().map(|n| n.total).collect();
            let (_, kth, _) = totals.select_nth_unstable_by(max_frames - 1, |a, b| b.cmp(a));
            let kth = *kth;
            if kth as f64 > threshold {
                threshold = kth as f64;
                strict = nodes[1..].iter().filter(|n| n.total >= kth).count()
                    > max_frames + max_frames / 10;
            }
        }
        let keep = |total: u64| {
            if strict {
                total as f64 > threshold
            } else {
                total as f64 >= threshold
            }
        };
        // owner[i]: the nearest kept node at or above i, which takes i's own weight.
        let mut owner: Vec<usize> = vec![0; nodes.len()];
        let mut extra: Vec<u64> = vec![0; nodes.len()];
        for i in 1..nodes.len() {
            let p = nodes[i].parent;
            let kept = owner[p] == p && keep(nodes[i].total);
            owner[i] = if kept { i } else { owner[p] };
            extra[owner[i]] += nodes[i].own;
        }
        let mut out = Vec::new();
        if extra[0] > 0 {
            // Whole top-level subtrees too thin to draw: keep their weight so percentages stay true.
            out.push(format!("{NARROW} {}", extra[0]));
        }
        let mut frames = 0;
        let mut names: Vec<u32> = Vec::new();
        for i in 1..nodes.len() {
            if owner[i] != i {
                continue;
            }
            frames += 1;
            names.truncate(nodes[i].depth - 1);
            names.push(nodes[i].name);
            if extra[i] > 0 {
                let mut line = String::new();
                self.push_line(&mut line, &names, extra[i]);
                line.pop();
                out.push(line);
            }
        }
        Pruned {
            lines: out,
            frames,
            dropped: nodes.len() - 1 - frames,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_merges() {
        let f = Folded::parse(Weight::Calls, "b;c 2\na;b 1\nb;c 3\nnot a line\n");
        assert_eq!(f.to_text(), "a;b 1\nb;c 5\n");
        assert_eq!(f.total(), 6);
    }

    #[test]
    fn pruning_moves_thin_subtrees_into_their_parent() {
        let f = Folded::parse(Weight::Time, "a;b 1000\na;c;d 1\na;c;e 1\nz 1\n");
        let all = f.pruned_lines(0.0, usize::MAX).lines;
        assert_eq!(all, vec!["a;b 1000", "a;c;d 1", "a;c;e 1", "z 1"]);
        // Below 1% go: a;c (2) folds into a; z, a whole top-level stack, into the narrow root.
        let pruned = f.pruned_lines(0.01, usize::MAX).lines;
        assert_eq!(pruned, vec!["[narrow stacks] 1", "a 2", "a;b 1000"]);
        // A frame budget of 2 keeps the two widest frames, a and a;b.
        let budget = f.pruned_lines(0.0, 2);
        assert_eq!(budget.lines, vec!["[narrow stacks] 1", "a 2", "a;b 1000"]);
        assert_eq!((budget.frames, budget.dropped), (2, 4));
    }

    #[test]
    fn names_are_made_safe() {
        assert_eq!(sanitize("a;b\nc"), "a:b c");
    }
}
