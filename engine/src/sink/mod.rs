//! Sinks of the dataflow.

pub mod clickhouse;
