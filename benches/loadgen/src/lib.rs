//! Realistic clickstream for the demo, the tests and the benchmarks: Zipf-distributed pages,
//! sessions with think times, identify calls after some sessions, a share of events out of
//! order and late. A crate of its own, so `deploy/up.sh` builds the demo's traffic generator
//! without the benchmark harness's dependencies.
#![warn(missing_docs)]

pub mod generator;
pub mod history;
