//! One type per output table of the dataflow, each in its own file next to its row mapping:
//! which worker writes a record, which epoch it belongs to, and how an epoch's records become
//! rows. [`attach`] connects a sink to its stream through the one epoch-sink operator, so the
//! dataflow function only wires.
//!
//! Rows are rewritten, never updated in place: every table is a ReplacingMergeTree that keeps
//! the highest `version`, and the engine writes the epoch as the version, so a later
//! correction always wins and a replayed epoch writes identical rows.

pub mod aggregates;
pub mod dead_letters;
pub mod events;
pub mod identities;
pub mod live_counters;
pub mod sessions;
pub mod visitor_hours;
pub mod warnings;

use timely::ExchangeData;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::{Stream, StreamVec};

use crate::clickhouse::io::IoRuntime;
use crate::clickhouse::{ClickHouseWriter, InsertRecord};
use crate::metrics::Metrics;
use crate::sink::epoch::{Write, epoch_sink};
use crate::sink::live::{LiveFeed, Updates};

/// A sink of one output table.
pub trait TableSink: 'static {
    /// What the dataflow delivers: a record, or a collection's `(record, epoch, diff)`.
    type Record: ExchangeData + Clone + EpochOf;
    /// The operator's name in timely's logs.
    const NAME: &'static str;
    /// Which worker writes a record (hashed with [`operators::route`]): by the table's key,
    /// so the writes of every table are spread over all workers.
    fn route(record: &Self::Record) -> u64;
    /// Turns the records of the completed epochs up to `epoch` into rows, and returns the
    /// write that makes them durable (see [`IoRuntime::retry`]).
    fn write(&mut self, epoch: u64, records: Vec<Self::Record>) -> Write;
    /// Where the rows go.
    fn table(&self) -> &Table;
}

/// Which epoch a record belongs to.
pub trait EpochOf {
    /// A collection update's own epoch; `None` for plain records, which take their message's.
    fn epoch_of(&self) -> Option<u64>;
}

impl<D> EpochOf for (D, u64, isize) {
    fn epoch_of(&self) -> Option<u64> {
        Some(self.1)
    }
}

/// Plain records: the epoch of the message that carries them.
macro_rules! plain_records {
    ($($record:ty),*) => {
        $(impl EpochOf for $record {
            fn epoch_of(&self) -> Option<u64> {
                None
            }
        })*
    };
}

plain_records!(
    operators::SharedEvent,
    operators::IdWarning,
    operators::DeadLetter,
    schemas::IngestWarning
);

/// Connects `sink` to `stream`. Records of epochs up to `replayed_through` are dropped: an
/// earlier run wrote them. The returned stream's frontier passes an epoch once the sink has
/// written it on every worker.
pub fn attach<'s, S: TableSink>(
    stream: StreamVec<'s, u64, S::Record>,
    mut sink: S,
    replayed_through: u64,
) -> Stream<'s, u64, Vec<()>> {
    let runtime = sink.table().runtime.runtime.clone();
    epoch_sink(
        stream,
        Exchange::new(S::route),
        S::NAME,
        <S::Record as EpochOf>::epoch_of,
        replayed_through,
        runtime,
        move |epoch, records| sink.write(epoch, records),
    )
}

/// Where every sink writes: ClickHouse, through the engine's retry policy.
#[derive(Debug, Clone)]
pub struct Table {
    /// The client.
    pub writer: ClickHouseWriter,
    /// Retries, shutdown and metrics.
    pub runtime: IoRuntime,
}

impl Table {
    /// Inserts `rows` into `table`, retrying until ClickHouse acknowledges them; `what`
    /// names the write in logs.
    pub async fn insert<R: InsertRecord>(&self, what: &str, table: &str, rows: Vec<R>) {
        self.runtime
            .retry(what, || self.writer.insert(table, &rows))
            .await;
    }

    /// The write of `rows` into `table`, for a sink that has nothing else to do with them.
    pub fn write<R>(&self, what: &'static str, table: &'static str, rows: Vec<R>) -> Write
    where
        R: InsertRecord + 'static,
    {
        let this = self.clone();
        Box::pin(async move { this.insert(what, table, rows).await })
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.runtime.metrics
    }
}

/// The live feed of the epochs this run reads for the first time: replayed and redone epochs
/// are history, so nothing is published for them.
#[derive(Debug, Clone)]
pub struct Live {
    /// The process's publisher.
    pub feed: LiveFeed,
    /// The first epoch that is not a replay.
    pub first_epoch: u64,
    /// Length of an epoch, ms: epoch `e` is the wall-clock instant `e * epoch_ms`.
    pub epoch_ms: u64,
}

impl Live {
    /// Publishes the updates `make` builds for `epoch` (given its instant, Unix ms), unless
    /// the epoch is a replay.
    pub fn publish(&self, epoch: u64, make: impl FnOnce(i64) -> Updates) {
        if epoch >= self.first_epoch {
            self.feed
                .publish(make(epoch.saturating_mul(self.epoch_ms) as i64));
        }
    }
}
