//! The clickstream engine: a timely dataflow cluster that reads the `events` topic, runs the
//! operators, and writes ClickHouse tables in per-epoch batches followed by a checkpoint.
//!
//! The binary (`main.rs`) only parses arguments and starts things; everything testable lives
//! here.
#![warn(missing_docs)]

pub mod allocator;
pub mod cli;
pub mod clickhouse;
pub mod config;
pub mod dataflow;
pub mod metrics;
pub mod recovery;
pub mod retry;
pub mod sink;
pub mod source;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
