//! Benchmark harness for clickstream (the generated clickstream is the `loadgen` crate).
#![warn(missing_docs)]

pub mod load;
