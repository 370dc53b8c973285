//! The clickstream engine's dataflow operators: pure timely/differential, no Kafka, no
//! ClickHouse, so each can be tested on generated input against a naive reference.
//!
//! One operator per module, each an extension trait on streams or collections.
#![warn(missing_docs)]

pub mod decode;

pub use decode::{DeadLetter, Decode, Decoded};
