//! What the `ffiprof` CLI and its agent say to each other, in one place both sides build from:
//! the `FFIPROF_*` environment of a run ([`env`]) and the files of an attach session
//! ([`attach`]). The agent is never linked into the CLI (it is embedded as a built `.so`), so
//! this crate is the only code the two share besides the profile format.
#![forbid(unsafe_code)]

pub mod attach;
pub mod env;
