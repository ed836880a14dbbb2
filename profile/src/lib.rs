//! The on-disk profile of ffiprof: the contract between the agent that writes it and every tool that
//! reads it (report, analyzer, flamegraph, diff).
//!
//! A profile is one JSON document that names its own format and version, so a reader can refuse a
//! file from a newer ffiprof with a clear message instead of misreading it. The agent writes it
//! atomically (temp file + rename, see [`write_atomic`]) so a reader never sees half a profile.
//!
//! ```
//! use ffiprof_profile::{Profile, FunctionRecord, read_str};
//! let mut p = Profile::new();
//! p.functions.push(FunctionRecord::new("/lib/libm.so.6", "cos"));
//! p.functions[0].calls = 3;
//! let text = p.to_json();
//! let back = read_str(&text, "example.json").unwrap();
//! assert_eq!(back.functions[0].calls, 3);
//! ```

#![forbid(unsafe_code)]

mod ctypes_internal;
mod histogram;
mod io;
mod measured;
mod merge;
mod pointer_flow;
mod split;

pub use ctypes_internal::{is_ctypes_internal, is_ctypes_module};
pub use histogram::{Histogram, HistogramError, LatencySummary};
pub use io::{read_file, read_str, write_atomic, ProfileError};
pub use measured::{ChangeMeasurement, MeasuredChanges};
pub use pointer_flow::{
    AllocatorFlow, Ending, FunctionRef, PointerFlow, SiteCount, TruncatedPointer,
};
pub use split::{Part, Split};

use serde::{Deserialize, Serialize};

/// The `format` field of every profile.
pub const FORMAT_NAME: &str = "ffiprof-profile";
/// The newest profile version this build reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// A whole profile: what one traced process (or one attach window) recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub format: String,
    pub version: u32,
    pub meta: Meta,
    /// One record per (library, C function) that was called at least once.
    pub functions: Vec<FunctionRecord>,
    /// ctypes' own foreign calls (`ctypes.cast`, `string_at`, `wstring_at` call into the `_ctypes`
    /// extension), in the shape of `functions`, each with the user's sites that made them: ctypes'
    /// cost, never a library function (see [`is_ctypes_internal`]).
    #[serde(default)]
    pub ctypes_internal: Vec<FunctionRecord>,
    /// Interned Python frames, referred to by index from [`Profile::stacks`].
    #[serde(default)]
    pub frames: Vec<Frame>,
    /// Interned Python stacks: indexes into [`Profile::frames`], outermost first.
    #[serde(default)]
    pub stacks: Vec<Vec<u32>>,
    /// Every hook the agent tried to install, and whether it could.
    #[serde(default)]
    pub hooks: Vec<HookStatus>,
    /// What the changes the advice proposes save, timed after the run on the program's own
    /// interpreter (absent with `--no-calibrate`, in profiles of other processes, and in older
    /// profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_changes: Option<MeasuredChanges>,
    /// Pointer values returned and passed back (see [`PointerFlow`]); absent in older profiles
    /// and when the agent recorded none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer_flow: Option<PointerFlow>,
}

/// Facts about the run as a whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Meta {
    pub pid: u32,
    #[serde(default)]
    pub ppid: u32,
    /// argv of the traced process.
    pub command: Vec<String>,
    /// `sys.version` of the traced interpreter, or null when the process is not Python.
    pub python: Option<String>,
    #[serde(default)]
    pub executable: String,
    /// Wall-clock start of recording, nanoseconds since the Unix epoch.
    #[serde(default)]
    pub start_unix_ns: u64,
    /// How long recording lasted.
    pub duration_ns: u64,
    /// The probe's own cost per timed interval, already subtracted from every time in the profile.
    pub probe_overhead_ns: u64,
    /// `tsc` or `monotonic`.
    #[serde(default)]
    pub clock: String,
    /// How the agent came in: `run` (LD_PRELOAD) or `attach`.
    #[serde(default)]
    pub mode: String,
    /// Why this copy was written: `periodic`, `exit`, `signal`, `exec`, `detach`.
    #[serde(default)]
    pub write_reason: String,
    /// True when this is the final write of the process (not a periodic snapshot).
    #[serde(default)]
    pub complete: bool,
    /// One call in `timing_sample_every` is timed; counts and bytes are always exact.
    #[serde(default = "one")]
    pub timing_sample_every: u32,
    /// One call in `stack_sample_every` records its whole Python stack.
    #[serde(default = "one")]
    pub stack_sample_every: u32,
    #[serde(default)]
    pub agent_version: String,
    /// Per-thread recorders that recorded a call: the number of threads that called, except that
    /// a thread started after another ended may reuse its recorder (so: at most that number).
    #[serde(default)]
    pub threads: u32,
    /// Calls the agent saw but could not record (recorder tables full); should be 0.
    #[serde(default)]
    pub dropped_calls: u64,
    /// `--lib` patterns in force; empty means every library reached through libffi.
    #[serde(default)]
    pub lib_filter: Vec<String>,
    /// `--site-skip` patterns in force: frames passed through to their caller for the call site.
    #[serde(default)]
    pub site_skip: Vec<String>,
    /// CPython 3.13+ with the Python layer on: each struct offset the layer reads that the
    /// interpreter publishes about itself (`_Py_DebugOffsets`), with the value ffiprof's own table
    /// gives it; the layer uses the published one. Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub python_offsets: Vec<PublishedOffset>,
}

/// One struct offset an interpreter publishes, beside ffiprof's own table's value for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PublishedOffset {
    /// Its name in `_Py_DebugOffsets`: `thread_state.current_frame`, `tuple_object.ob_item`, ...
    pub name: String,
    pub published: u64,
    pub table: u64,
}

fn one() -> u32 {
    1
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Everything recorded about one C function of one library.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionRecord {
    /// Path of the library the function lives in, as the loader knows it.
    pub library: String,
    /// Symbol name from the library's own symbol tables; `0x…` when it has none.
    pub function: String,
    /// Offset of the function from the library's load base.
    #[serde(default)]
    pub offset: u64,
    pub calls: u64,
    /// Number of C arguments (from the libffi cif) of the last call seen.
    #[serde(default)]
    pub arg_count: u32,
    /// Sum over calls of the C argument sizes (`arg_types[i]->size`).
    pub arg_bytes: u64,
    /// Sum over calls of the C return value size.
    #[serde(default)]
    pub ret_bytes: u64,
    /// Sum over calls of the bytes that pointer arguments refer to, where knowable.
    #[serde(default)]
    pub buffer_bytes: u64,
    /// Calls whose time was measured (all of them unless timing is sampled).
    #[serde(default)]
    pub timed_calls: u64,
    /// Time of all the calls by part (`native_ns` ... `construction_ns` in JSON), extrapolated
    /// to all calls when timing is sampled.
    #[serde(flatten)]
    pub time: Split,
    #[serde(default)]
    pub construction_bytes: u64,
    /// Calls that went through the Python-level hook (ctypes/cffi); 0 for C callers.
    #[serde(default)]
    pub python_calls: u64,
    /// Calls of a `--lib` target's function (seen through the GOT trampoline) made inside a
    /// bracketed builtin's call: that builtin's record counts the boundary crossing and holds
    /// their time as its native part, so totals count them once, there (see
    /// [`Profile::total_calls`]). Absent when zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub within_builtin_calls: u64,
    /// Threads that called it from Python (0: not recorded, a profile written before the field,
    /// and absent from the file then), counted by thread pointer as `meta.threads` is: a thread
    /// started after another ended may be given its pointer and counted with it (they never
    /// called at once). gil-contention needs threads that call, not threads that exist: a GIL
    /// wait at the calls of one thread is other threads' Python work.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calling_threads: u64,
    /// The most Python calls any one thread made (0: not recorded): how evenly the calls were
    /// shared among `calling_threads`, so how many of them could have met another caller.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub busiest_thread_python_calls: u64,
    /// Calls that received a ctypes object built just for them (same type and size at the site).
    #[serde(default)]
    pub fresh_buffer_calls: u64,
    /// Calls made through a ctypes function with no `argtypes` declared.
    #[serde(default)]
    pub undeclared_argtypes_calls: u64,
    /// Calls made through a ctypes function with no `restype` declared (default `c_int`).
    #[serde(default)]
    pub undeclared_restype_calls: u64,
    /// Native latency distribution of the calls: the timed ones, each counted as many times as
    /// the calls it stands for (the always-timed first calls of a call site once, a randomly
    /// sampled later one about `timing_sample_every` times), so its count is `calls`. Profiles
    /// written before this counted each timed call once.
    #[serde(default)]
    pub native_hist: Histogram,
    /// Per Python call site.
    #[serde(default)]
    pub sites: Vec<SiteRecord>,
    /// How Python called the function: `ctypes`, `cffi-abi` (libffi, seen through the Python
    /// layer's wrappers), `cffi-api` (a cffi API-mode `lib` function), `extension` (a builtin
    /// function or method of an extension module, with `--lib`; or a C function of a `--lib`
    /// target every call of which came through the GOT trampoline: a module's own call into the
    /// target, from a C extension, cffi API mode, Cython, pybind11); empty for calls through
    /// libffi seen without the Python layer, or in a profile written before the field (then absent from the file, which
    /// keeps older profiles byte for byte).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binding: String,
    /// For `extension`, which kind where it can be told: `c`, `cython`, `pybind11`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binding_detail: String,
    /// Time of calls that could not be split, from the Python call's entry to its return: a
    /// builtin with no separate native entry seen inside (the library compiled into the
    /// extension, or no `--lib` thunks). Never in `time`, which holds only measured parts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unsplit_ns: u64,
}

/// `FunctionRecord::binding` of calls seen through the GOT trampoline.
pub const BINDING_EXTENSION: &str = "extension";

impl FunctionRecord {
    /// All the time its calls took: the split parts and the unsplit whole calls.
    pub fn total_ns(&self) -> u64 {
        self.time.total() + self.unsplit_ns
    }

    pub fn new(library: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            library: library.into(),
            function: function.into(),
            ..Self::default()
        }
    }

    /// Name of the library file without its directory.
    pub fn library_name(&self) -> &str {
        self.library.rsplit('/').next().unwrap_or(&self.library)
    }
}

/// What one Python call site did with one C function.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SiteRecord {
    pub file: String,
    pub line: u32,
    pub function: String,
    pub calls: u64,
    #[serde(default)]
    pub timed_calls: u64,
    /// Time of the site's calls by part, as in [`FunctionRecord::time`].
    #[serde(flatten)]
    pub time: Split,
    #[serde(default)]
    pub construction_bytes: u64,
    pub buffer_bytes: u64,
    #[serde(default)]
    pub arg_bytes: u64,
    #[serde(default)]
    pub fresh_buffer_calls: u64,
    /// Python time between two consecutive calls of this site on one thread (the loop around
    /// the call), summed over `gap_samples` measured pairs: `gap_ns / gap_samples` is the mean.
    #[serde(default)]
    pub gap_ns: u64,
    #[serde(default)]
    pub gap_samples: u64,
    /// Whole stacks seen at this site (sampled per `meta.stack_sample_every`).
    #[serde(default)]
    pub stacks: Vec<StackSample>,
    /// When the calls were made inside a pass-through frame — a generic forwarder (a function
    /// taking `*args`/`**kwargs` that makes the call with `f(*args, **kwargs)`), ctypes' own
    /// `cast`/`string_at`, or a `--site-skip` frame — the innermost such frame; this site is the
    /// first frame up the stack that is not one. Absent for a call made at the site itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<Frame>,
    /// The site's share of [`FunctionRecord::unsplit_ns`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unsplit_ns: u64,
    /// ctypes called without `argtypes` here: per argument, the Python type(s) ctypes' guessing
    /// was given, alternatives joined by `|` in order of first sight — `int`, `bool`, `bytes`,
    /// `str`, `None`; `ctypes:T` an instance of ctypes type T (passed as itself); `byref:T` a
    /// `byref()` of one; any other name an object passed through its `_as_parameter_`. Empty when
    /// `argtypes` was declared (or the calls are not ctypes'), and in older profiles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arg_types: Vec<String>,
    /// The calls whose arguments were looked at for `arg_types` (a pair's first 8 on a thread,
    /// then its 2^k-th: never every call).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arg_types_calls: u64,
    /// Argument positions (from 0) where a Python int outside -2^31..2^32 was passed without
    /// argtypes: ctypes cut it to a 32-bit C int, and its high bits were lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated_int_args: Vec<u32>,
    /// The result of these calls was read through ctypes' default `c_int` restype (never
    /// assigned): a pointer or 64-bit result comes back cut to 32 bits.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restype_default: bool,
    /// How the objects built afresh for these calls were built, as seen on a bounded number of
    /// them: `instance` (of a type made before: `T()`), `type_per_call` (the array type made for
    /// the construction: `(c_char * n)()`), `helper` (`create_string_buffer` and the like; on
    /// CPython 3.11 the helper is not seen, and its array type shows as `type_per_call`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fresh_buffer_builds: Vec<String>,
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// Calls and time of one interned stack at one site.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StackSample {
    /// Index into [`Profile::stacks`].
    pub stack: u32,
    pub calls: u64,
    /// The site's time shared out to this stack, in proportion to its samples.
    #[serde(flatten)]
    pub time: Split,
}

/// One Python frame: where a stack passes through.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Frame {
    pub file: String,
    pub function: String,
    pub line: u32,
}

/// Whether one hook could be installed, and where.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HookStatus {
    /// The symbol or slot hooked: `ffi_call`, `dlopen`, `tp_call`, ...
    pub hook: String,
    /// The module whose GOT or type was patched.
    pub module: String,
    pub installed: bool,
    /// Why it was skipped, when it was.
    #[serde(default)]
    pub error: Option<String>,
}

impl Default for Profile {
    fn default() -> Self {
        Self::new()
    }
}

impl Profile {
    /// An empty profile of the current format and version.
    pub fn new() -> Self {
        Self {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            meta: Meta {
                timing_sample_every: 1,
                stack_sample_every: 1,
                ..Meta::default()
            },
            functions: Vec::new(),
            ctypes_internal: Vec::new(),
            frames: Vec::new(),
            stacks: Vec::new(),
            hooks: Vec::new(),
            measured_changes: None,
            pointer_flow: None,
        }
    }

    /// The profile as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile always serializes")
    }

    /// Total calls over all functions.
    /// Boundary calls: every function's calls, less the target calls made inside a bracketed
    /// builtin's call (the builtin's own record counts that crossing).
    pub fn total_calls(&self) -> u64 {
        self.functions
            .iter()
            .map(|f| f.calls.saturating_sub(f.within_builtin_calls))
            .sum()
    }

    /// The function record for `function` (first match by symbol name).
    pub fn function(&self, function: &str) -> Option<&FunctionRecord> {
        self.functions.iter().find(|f| f.function == function)
    }
}

pub use merge::merge;
