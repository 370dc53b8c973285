//! `_dead_letters`: records that could not be decoded, with their bytes, so they can be
//! replayed once the cause is fixed.

use clickhouse::Row;
use operators::{DeadLetter, route};
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::sink::epoch::Write;

/// One row of `_dead_letters`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct DeadLetterRow {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: String,
    pub payload_hex: String,
    pub seen_at: u32,
}

impl DeadLetterRow {
    /// The row for a dead letter of `topic`.
    pub fn new(topic: &str, dead: DeadLetter, now_ms: i64) -> Self {
        DeadLetterRow {
            topic: topic.to_owned(),
            partition: dead.partition,
            offset: dead.offset,
            error: dead.error,
            payload_hex: hex::encode(&dead.payload),
            seen_at: datetime(now_ms),
        }
    }
}

/// Writes dead letters of `topic`.
#[derive(Debug)]
pub struct DeadLettersSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for DeadLettersSink {
    type Record = DeadLetter;
    const NAME: &'static str = "DeadLettersSink";

    fn route(dead: &Self::Record) -> u64 {
        route(&(dead.partition, dead.offset))
    }

    fn write(&mut self, _epoch: u64, dead: Vec<Self::Record>) -> Write {
        let now_ms = crate::now_ms() as i64;
        let topic = self.table.writer.topic().to_owned();
        let rows: Vec<DeadLetterRow> = dead
            .into_iter()
            .map(|d| DeadLetterRow::new(&topic, d, now_ms))
            .collect();
        let table = self.table.clone();
        Box::pin(async move {
            let count = rows.len() as u64;
            table.insert("dead letters", "_dead_letters", rows).await;
            table.metrics().dead_letters.inc_by(count);
        })
    }

    fn table(&self) -> &Table {
        &self.table
    }
}
