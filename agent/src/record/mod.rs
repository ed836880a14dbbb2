//! Recording: the clock, the per-thread recorders and per-call context, and turning them into a
//! profile on disk. Names (sites, frames, profile meta) and the native floor are registered
//! by the layers above.

pub mod call_ctx;
pub mod clock;
pub mod pointers;
pub mod recorder;
pub mod snapshot;
pub mod writer;
