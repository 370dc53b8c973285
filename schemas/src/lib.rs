//! Types shared by every clickstream component: the [`Event`] model (Segment's vocabulary),
//! its versioned binary wire format, and the ClickHouse DDL.
//!
//! This crate deliberately has no runtime dependencies (no tokio, no timely, no Kafka): every
//! other crate depends on it, so it must stay cheap to build and impossible to misuse.
#![warn(missing_docs)]

pub mod clickhouse_error;
pub mod ddl;
pub mod definitions;
pub mod erasure;
pub mod event;
pub mod live;
pub mod retention;
pub mod tenants;
pub mod version;
pub mod warning;
pub mod wire;

/// The shared string of the dimension fields (see [`event::Client`]).
pub use arcstr::ArcStr;
pub use definitions::BounceRule;
pub use event::{
    Acquisition, Campaign, Client, ControlMessage, Event, EventKind, Location, Page, SourceRecord,
};
pub use warning::{IngestWarning, WarningKind};
pub use wire::Record;
