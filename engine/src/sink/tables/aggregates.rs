//! `agg_minute_metrics`: one upsert per tenant, minute, metric and dimension.

use clickhouse::Row;
use operators::{AggRow, route};
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::sink::epoch::Write;
use crate::sink::upserts::upserts;

/// One row of `agg_minute_metrics`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct AggMinuteRow {
    pub tenant: String,
    pub minute: u32,
    pub metric: String,
    pub dimension: String,
    pub value: i64,
    pub version: u64,
}

impl AggMinuteRow {
    /// The row of `aggregate` at `version`; a retracted value is written as 0.
    pub fn new(aggregate: &AggRow, deleted: bool, version: u64) -> Self {
        AggMinuteRow {
            tenant: aggregate.tenant.clone(),
            minute: datetime(aggregate.minute_ms),
            metric: aggregate.metric.as_str().to_owned(),
            dimension: aggregate.dimension.clone(),
            value: if deleted { 0 } else { aggregate.value },
            version,
        }
    }
}

/// Writes the per-minute aggregates.
#[derive(Debug)]
pub struct AggregatesSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for AggregatesSink {
    type Record = (AggRow, u64, isize);
    const NAME: &'static str = "AggregatesSink";

    fn route((row, _, _): &Self::Record) -> u64 {
        route(&(&row.tenant, row.minute_ms, row.metric, &row.dimension))
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) -> Write {
        let rows: Vec<AggMinuteRow> = upserts(updates, |a: &AggRow| {
            (a.tenant.clone(), a.minute_ms, a.metric, a.dimension.clone())
        })
        .into_iter()
        .map(|(row, removed)| AggMinuteRow::new(&row, removed, epoch))
        .collect();
        self.table.write("aggregates", "agg_minute_metrics", rows)
    }

    fn table(&self) -> &Table {
        &self.table
    }
}
