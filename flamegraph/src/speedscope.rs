//! speedscope's file format (<https://www.speedscope.app/file-format-schema.json>): one file with
//! three sampled profiles over the same frames — boundary time (ns, with the split as leaf frames),
//! calls, and bytes — so speedscope's profile picker switches between the weights.

use serde_json::{json, Value};

use ffiprof_profile::{Part, Profile};

use crate::stacks::{attribute, function_name, FrameKey, Interner, StackCost, DRAWN_PARTS};

/// The `$schema` value speedscope recognises its files by.
pub const SCHEMA_URL: &str = "https://www.speedscope.app/file-format-schema.json";

/// Options for [`export`].
#[derive(Debug, Clone, Default)]
pub struct SpeedscopeOptions {
    /// Shown as the file's name in speedscope; defaults to the traced command.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Node {
    Frame(FrameKey),
    Function(usize),
    Part(&'static str),
}

struct Builder<'a> {
    profile: &'a Profile,
    frames: Interner<Node>,
}

impl Builder<'_> {
    fn stack(&mut self, sc: &StackCost, tail: &[Node]) -> Vec<u32> {
        let mut ids: Vec<u32> = sc
            .frames
            .iter()
            .map(|k| self.frames.id(Node::Frame(*k)))
            .collect();
        ids.extend(tail.iter().map(|n| self.frames.id(*n)));
        ids
    }

    fn frame_json(&self, n: &Node) -> Value {
        match n {
            Node::Frame(k) => {
                let loc = k.location(self.profile);
                if loc.file.is_empty() {
                    json!({ "name": loc.function })
                } else {
                    json!({ "name": loc.function, "file": loc.file, "line": loc.line })
                }
            }
            Node::Function(fi) => {
                let f = &self.profile.functions[*fi];
                json!({ "name": function_name(f), "file": f.library })
            }
            Node::Part(p) => json!({ "name": p }),
        }
    }
}

fn sampled(name: &str, unit: &str, samples: Vec<Vec<u32>>, weights: Vec<u64>) -> Value {
    let end: u64 = weights.iter().sum();
    json!({
        "type": "sampled",
        "name": name,
        "unit": unit,
        "startValue": 0,
        "endValue": end,
        "samples": samples,
        "weights": weights,
    })
}

/// The speedscope document of a profile.
pub fn export(profile: &Profile, options: &SpeedscopeOptions) -> Value {
    let attributed = attribute(profile);
    let mut b = Builder {
        profile,
        frames: Interner::default(),
    };
    let (mut t_samples, mut t_weights) = (Vec::new(), Vec::new());
    let (mut c_samples, mut c_weights) = (Vec::new(), Vec::new());
    let (mut b_samples, mut b_weights) = (Vec::new(), Vec::new());
    for sc in &attributed {
        let func = Node::Function(sc.function);
        for (part, label) in DRAWN_PARTS {
            let v = *sc.costs.time.get(part);
            if v > 0 {
                let tail: &[Node] = if part == Part::Construction {
                    &[Node::Part(label)]
                } else {
                    &[func, Node::Part(label)]
                };
                t_samples.push(b.stack(sc, tail));
                t_weights.push(v);
            }
        }
        if sc.costs.calls > 0 {
            c_samples.push(b.stack(sc, &[func]));
            c_weights.push(sc.costs.calls);
        }
        for (part, v) in [
            ("arg-bytes", sc.costs.arg_bytes),
            ("buffer-bytes", sc.costs.buffer_bytes),
        ] {
            if v > 0 {
                b_samples.push(b.stack(sc, &[func, Node::Part(part)]));
                b_weights.push(v);
            }
        }
    }
    let frames: Vec<Value> = b.frames.keys.iter().map(|n| b.frame_json(n)).collect();
    let name = options.name.clone().unwrap_or_else(|| {
        let cmd = profile.meta.command.join(" ");
        if cmd.is_empty() {
            "ffiprof profile".to_string()
        } else {
            format!("ffiprof: {cmd}")
        }
    });
    json!({
        "$schema": SCHEMA_URL,
        "name": name,
        "exporter": format!("ffiprof {}", env!("CARGO_PKG_VERSION")),
        "activeProfileIndex": 0,
        "shared": { "frames": frames },
        "profiles": [
            sampled("boundary time", "nanoseconds", t_samples, t_weights),
            sampled("calls", "none", c_samples, c_weights),
            sampled("bytes", "bytes", b_samples, b_weights),
        ],
    })
}

/// [`export`] as compact JSON text.
pub fn export_string(profile: &Profile, options: &SpeedscopeOptions) -> String {
    serde_json::to_string(&export(profile, options)).expect("a JSON value always serializes")
}
