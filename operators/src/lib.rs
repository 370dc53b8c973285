//! The clickstream engine's dataflow operators: pure timely/differential, no Kafka, no
//! ClickHouse, so each can be tested on generated input against a naive reference.
//!
//! One operator per module, each an extension trait on streams or collections. The keyed
//! operators (`dedup`, `assign_persons`, `sessionize`, `window_aggregate`, `visitor_hours`)
//! keep explicit per-key state so that they can release it once it can no longer change
//! (bounded memory); their outputs are differential collections whose retractions are real
//! corrections. Identity state (`earliest_claims`, `stitch_identities`) is kept for good: one
//! entry per linked id pair and per known user id, the size of the identity map, held per
//! tenant over interned ids (`stitch_identities` relabels only the components a change
//! touches, instead of differential's label propagation, whose arrangements cost ten copies
//! of every id).
#![warn(missing_docs)]
// Dataflow records are moved through vectors by value; boxing the larger variant of an enum
// would cost an allocation per record to save bytes in a buffer that is reused anyway.
#![allow(clippy::large_enum_variant)]

pub mod active_visitors;
pub mod claims;
pub mod decode;
pub mod dedup;
pub mod erasure;
mod expiry;
pub mod gauges;
mod growth;
pub mod identity;
pub mod model;
pub mod persons;
pub mod pipeline;
pub mod placeholders;
pub mod reference;
mod rows;
pub mod sessionize;
mod settling;
mod stash;
#[cfg(test)]
mod testing;
pub mod visitor_hours;
pub mod window_aggregate;
mod windows;

pub use active_visitors::ActiveVisitors;
pub use claims::EarliestClaims;
pub use decode::{DeadLetter, Decode, Decoded, NotAnEvent};
pub use dedup::{Dedup, DedupSettings};
pub use erasure::{ControlRecord, Erase, EraseRecords, Erasures, Retractable};
pub use gauges::{StateGauge, StateGauges};
pub use identity::{IdentityPolicy, StitchIdentities};
pub use model::*;
pub use persons::{AssignPersons, Retention};
pub use pipeline::{Analytics, AnalyticsSettings, analytics, insertions, is_late};
pub use placeholders::{DEFAULT_PLACEHOLDER_IDS, IdField, IdWarning, PlaceholderIds};
pub use sessionize::{SessionSettings, Sessionize};
pub use stash::route;
pub use visitor_hours::{VisitorHours, hour_of};
pub use window_aggregate::{WindowAggregate, minute_rollups};
