//! Recording: the clock, the per-thread recorders, and turning them into a profile on disk.

pub mod clock;
pub mod recorder;
pub mod snapshot;
pub mod writer;
