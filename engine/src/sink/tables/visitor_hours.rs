//! `agg_hour_visitors`: one upsert per tenant, hour, visitor and person.

use clickhouse::Row;
use operators::{VisitorHour, route};
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::sink::epoch::Write;
use crate::sink::upserts::upserts;

/// One row of `agg_hour_visitors`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct VisitorHourRow {
    pub tenant: String,
    pub hour: u32,
    pub visitor_id: String,
    pub person_id: String,
    pub events: u32,
    pub page_views: u32,
    pub version: u64,
}

impl VisitorHourRow {
    /// The row of `activity` at `version`; a retracted row is written with no events.
    pub fn new(activity: &VisitorHour, deleted: bool, version: u64) -> Self {
        let count = |value: i64| {
            if deleted {
                0
            } else {
                u32::try_from(value).unwrap_or(u32::MAX)
            }
        };
        VisitorHourRow {
            tenant: activity.tenant.clone(),
            hour: datetime(activity.hour_ms),
            visitor_id: activity.visitor_id.clone(),
            person_id: activity.person_id.clone(),
            events: count(activity.events),
            page_views: count(activity.page_views),
            version,
        }
    }
}

/// Writes activity per visitor and hour.
#[derive(Debug)]
pub struct VisitorHoursSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for VisitorHoursSink {
    type Record = (VisitorHour, u64, isize);
    const NAME: &'static str = "VisitorHoursSink";

    fn route((row, _, _): &Self::Record) -> u64 {
        route(&(&row.tenant, row.hour_ms, &row.visitor_id, &row.person_id))
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) -> Write {
        let rows: Vec<VisitorHourRow> = upserts(updates, |v: &VisitorHour| {
            (
                v.tenant.clone(),
                v.hour_ms,
                v.visitor_id.clone(),
                v.person_id.clone(),
            )
        })
        .into_iter()
        .map(|(row, removed)| VisitorHourRow::new(&row, removed, epoch))
        .collect();
        self.table.write("visitor hours", "agg_hour_visitors", rows)
    }

    fn table(&self) -> &Table {
        &self.table
    }
}
