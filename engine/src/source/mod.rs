//! Sources of the dataflow.

pub mod kafka;
