//! pprof export: a gzip-compressed `profile.proto`, which `go tool pprof`, Pyroscope, Parca and other
//! continuous-profiling servers read.
//!
//! One sample per (Python stack, C function), leaf first as pprof wants: the C function, then the
//! call site, then its callers. The split is not made of frames here but of sample values — pprof's
//! `-sample_index` picks the column — and the default column is the whole boundary time.

pub mod proto;

use std::collections::HashMap;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use ffiprof_profile::Profile;

use crate::stacks::{attribute, function_name, ColumnOf, FrameKey, Interner};
use crate::{Error, Result};

/// The sample columns, in order: (type, unit, value of a stack).
pub const SAMPLE_TYPES: [(&str, &str, ColumnOf); 9] = [
    ("calls", "count", |c| c.calls),
    ("time", "nanoseconds", |c| c.total_ns()),
    ("native", "nanoseconds", |c| c.time.native),
    ("marshal_in", "nanoseconds", |c| c.time.marshal_in),
    ("marshal_out", "nanoseconds", |c| c.time.marshal_out),
    ("gil_wait", "nanoseconds", |c| c.time.gil_wait),
    ("construction", "nanoseconds", |c| c.time.construction),
    ("arg_bytes", "bytes", |c| c.arg_bytes),
    ("buffer_bytes", "bytes", |c| c.buffer_bytes),
];

/// Interns strings into the profile's string table (index 0 is always "").
struct Strings {
    table: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        Strings {
            table: vec![String::new()],
            ids: HashMap::from([(String::new(), 0)]),
        }
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.ids.insert(s.to_string(), i);
        i
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Loc {
    Frame(FrameKey),
    Function(usize),
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The decoded pprof profile of an ffiprof profile.
pub fn to_proto(profile: &Profile) -> proto::Profile {
    let mut strings = Strings::new();
    let sample_type = SAMPLE_TYPES
        .iter()
        .map(|(t, u, _)| proto::ValueType {
            r#type: strings.id(t),
            unit: strings.id(u),
        })
        .collect();
    let mut locs: Interner<Loc> = Interner::default();
    let mut mappings: Vec<proto::Mapping> = Vec::new();
    let mut mapping_of_library: HashMap<&str, u64> = HashMap::new();
    let mut samples = Vec::new();
    for sc in attribute(profile) {
        let mut location_id = vec![locs.id(Loc::Function(sc.function)) as u64 + 1];
        location_id.extend(
            sc.frames
                .iter()
                .rev()
                .map(|k| locs.id(Loc::Frame(*k)) as u64 + 1),
        );
        samples.push(proto::Sample {
            location_id,
            value: SAMPLE_TYPES
                .iter()
                .map(|(_, _, get)| clamp(get(&sc.costs)))
                .collect(),
            label: Vec::new(),
        });
    }
    let mut functions = Vec::new();
    let mut locations = Vec::new();
    for (i, loc) in locs.keys.iter().enumerate() {
        let id = i as u64 + 1;
        let (name, system_name, filename, line, mapping_id, address) = match loc {
            Loc::Frame(k) => {
                let l = k.location(profile);
                // No system name: a Python function has no mangled one, and pprof's demangler
                // rewrites a name equal to its system name, cutting `<...>` out of it
                // (`<module>`, `<lambda>`, `<listcomp>` would show as `<unknown>`); a name that
                // differs from its system name is left alone.
                (
                    l.function.to_string(),
                    String::new(),
                    l.file.to_string(),
                    l.line as i64,
                    0,
                    0,
                )
            }
            Loc::Function(fi) => {
                let f = &profile.functions[*fi];
                let mapping_id =
                    *mapping_of_library
                        .entry(f.library.as_str())
                        .or_insert_with(|| {
                            let id = mappings.len() as u64 + 1;
                            mappings.push(proto::Mapping {
                                id,
                                filename: strings.id(&f.library),
                                has_functions: true,
                                ..Default::default()
                            });
                            id
                        });
                (
                    function_name(f),
                    f.function.clone(),
                    f.library.clone(),
                    0,
                    mapping_id,
                    f.offset,
                )
            }
        };
        functions.push(proto::Function {
            id,
            name: strings.id(&name),
            system_name: strings.id(&system_name),
            filename: strings.id(&filename),
            start_line: 0,
        });
        locations.push(proto::Location {
            id,
            mapping_id,
            address,
            line: vec![proto::Line {
                function_id: id,
                line,
                column: 0,
            }],
            is_folded: false,
        });
    }
    let m = &profile.meta;
    let mut comment = Vec::new();
    if !m.command.is_empty() {
        comment.push(strings.id(&format!("command: {}", m.command.join(" "))));
    }
    if let Some(py) = &m.python {
        comment.push(strings.id(&format!("python: {py}")));
    }
    if m.timing_sample_every > 1 {
        comment.push(strings.id(&format!(
            "times measured on each site's first 8 calls, then on 1 call in {} and scaled",
            m.timing_sample_every
        )));
    }
    let default_sample_type = strings.id("time");
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos: clamp(m.start_unix_ns),
        duration_nanos: clamp(m.duration_ns),
        comment,
        default_sample_type,
        ..Default::default()
    }
}

/// The gzip-compressed protobuf bytes, as pprof files are stored.
pub fn export(profile: &Profile) -> Result<Vec<u8>> {
    let bytes = to_proto(profile).encode_to_vec();
    // GzEncoder writes a zero mtime, so the same profile always gives the same bytes.
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&bytes).map_err(Error::Pprof)?;
    gz.finish().map_err(Error::Pprof)
}
