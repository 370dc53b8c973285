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
    /// The hash of the record's key in the table (with [`operators::route`]): every record
    /// of a key meets one writer (see [`Writers`]), which consolidates them.
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

/// Which workers write a table: one per process. ClickHouse makes a part of every insert
/// and merges the parts in the background, so inserts cost by their number more than by
/// their rows (its documentation asks for few, large inserts): a table written by every
/// worker took one insert per worker and epoch, 24 a table every 500 ms on `-w 8 -n 3`, and
/// on the 2-core machine of `bench memory` (`-w 2`) ClickHouse's merges took more CPU than
/// the engine and the broker together. The process is chosen by the record's key, so the
/// records of a key still meet one writer; within it, a table's slot spreads the tables over
/// the process's workers.
#[derive(Debug, Clone, Copy)]
pub struct Writers {
    /// Workers in the cluster.
    pub peers: usize,
    /// Workers per process: timely numbers process `p`'s workers from `p * per_process`.
    pub per_process: usize,
}

impl Writers {
    /// The worker that writes a record whose key hashes to `key_hash`, in the table of
    /// `slot`.
    pub fn worker(&self, key_hash: u64, slot: usize) -> u64 {
        let per_process = self.per_process.clamp(1, self.peers.max(1));
        let processes = (self.peers / per_process).max(1) as u64;
        let process = key_hash % processes;
        process * per_process as u64 + (slot % per_process) as u64
    }
}

/// Connects `sink` to `stream`, its records written by the workers `writers` gives the
/// table of `slot`. Records of epochs up to `replayed_through` are dropped: an earlier run
/// wrote them. The returned stream's frontier passes an epoch once the sink has written it
/// on every worker.
pub fn attach<'s, S: TableSink>(
    stream: StreamVec<'s, u64, S::Record>,
    mut sink: S,
    (writers, slot): (Writers, usize),
    replayed_through: u64,
) -> Stream<'s, u64, Vec<()>> {
    let runtime = sink.table().runtime.runtime.clone();
    epoch_sink(
        stream,
        Exchange::new(move |record: &S::Record| writers.worker(S::route(record), slot)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// On `-w 8 -n 3` a table is written by one worker of each process, the same one for
    /// every key of a process, and the tables' slots spread over a process's workers.
    #[test]
    fn a_table_is_written_by_one_worker_per_process() {
        let writers = Writers {
            peers: 24,
            per_process: 8,
        };
        for slot in 0..11 {
            let chosen: BTreeSet<u64> = (0..1000u64)
                .map(|key| writers.worker(operators::route(&key), slot))
                .collect();
            let expected: BTreeSet<u64> = (0..3)
                .map(|process| process * 8 + (slot % 8) as u64)
                .collect();
            assert_eq!(chosen, expected, "slot {slot}");
        }
        let one_process = Writers {
            peers: 2,
            per_process: 2,
        };
        assert_eq!(one_process.worker(12345, 0), 0);
        assert_eq!(one_process.worker(12345, 1), 1);
        assert_eq!(one_process.worker(12345, 2), 0);
        // A layout it cannot be (more workers per process than peers) still names a worker.
        let odd = Writers {
            peers: 1,
            per_process: 4,
        };
        assert!((0..5).all(|slot| odd.worker(99, slot) == 0));
    }
}
