//! Sinks of the dataflow: per-epoch writes to ClickHouse, then the checkpoint.

pub mod checkpoint;
pub mod epoch;
pub mod erasure;
pub mod live;
pub mod retention;
pub mod rollups;
pub mod tables;
pub mod upserts;
