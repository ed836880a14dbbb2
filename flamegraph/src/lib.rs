//! Flamegraphs and reports of an ffiprof profile (filled in by the reports issue).
#![forbid(unsafe_code)]
