//! The ffiprof agent: a small shared library that lives inside the traced process, catches every
//! call into native libraries made through libffi (ctypes, cffi), and leaves a profile behind.
//!
//! This crate is only the agent: it builds to a cdylib that the CLI embeds as bytes (see the
//! root `build.rs`) and never links. The CLI's side of a traced process — launching it, injecting
//! into a running one — is the `ffiprof-inject` crate; what the two say to each other is
//! `ffiprof-protocol`.
//!
//! It comes in by LD_PRELOAD (`ffiprof run`) or by injection (`ffiprof attach`). In both cases the
//! same GOT patcher (`hook::got`) redirects `ffi_call` — and `dlopen`, to patch libraries loaded
//! later — to hooks that record per thread without locks (`record::recorder`); a snapshotter thread
//! turns the recorders into an `ffiprof_profile::Profile` and writes it atomically.
//!
//! All unsafe code lives in the named modules `runtime`, `hook`,
//! `record::{call_ctx, clock, recorder, writer}`, `python`, `symbols` and `session`, each
//! block with a `// SAFETY:` comment.
//!
//! Layers, lowest first (no module imports one above it): `runtime` (flags, errno guard, debug
//! output, fork-held locks); `record`; `hook` and `python`; `session` (start, stop, fork, the
//! attach entry, the profile meta, and `session::lifecycle`, its one table of reset and fork
//! work). See ARCHITECTURE.md.
//!
//! ```text
//! // The CLI runs a program with the agent preloaded and reads what it wrote:
//! let status = std::process::Command::new("python3")
//!     .arg("app.py")
//!     .env("LD_PRELOAD", "/path/to/libffiprof_agent.so")
//!     .env("FFIPROF_OUTPUT", "/tmp/app.ffiprof.json")
//!     .status()
//!     .unwrap();
//! let profile = ffiprof_profile::read_file("/tmp/app.ffiprof.json").unwrap();
//! # let _ = (status, profile);
//! ```

pub mod session;
/// The agent's configuration, read from the `FFIPROF_*` environment the CLI sets.
pub use ffiprof_protocol::env as config;
pub mod hook;
pub mod python;
pub mod record;
pub mod runtime;
pub mod symbols;

/// The LD_PRELOAD constructor: runs when the loader initialises the agent, before `main`.
extern "C" fn agent_constructor() {
    runtime::guard((), session::init_from_env);
}

// SAFETY: a function pointer placed in .init_array is called once by the loader with no
// arguments, as an `extern "C" fn()`; the function catches every panic.
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = agent_constructor;
