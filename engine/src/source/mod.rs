//! Sources of the dataflow.

pub mod control;
pub mod kafka;
pub mod log_check;
pub mod positions;
