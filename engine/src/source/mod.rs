//! Sources of the dataflow.

pub mod control;
pub mod kafka;
