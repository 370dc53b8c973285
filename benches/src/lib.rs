//! Benchmark harness and load generation for clickstream.
#![warn(missing_docs)]

pub mod generator;
pub mod load;
