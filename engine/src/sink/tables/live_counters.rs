//! `live_counters`: each tenant's visitors active in the last five minutes, refreshed every
//! epoch, also published to the live feed.

use clickhouse::Row;
use operators::route;
use schemas::live::LiveUpdate;
use serde::{Deserialize, Serialize};

use super::{Live, Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::sink::epoch::Write;
use crate::sink::upserts::upserts;

/// One row of `live_counters`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct LiveCounterRow {
    pub tenant: String,
    pub counter: String,
    pub value: i64,
    pub updated_at: u32,
    pub version: u64,
}

/// Writes and publishes the active-visitors counter.
#[derive(Debug)]
pub struct LiveCountersSink {
    /// Where rows go.
    pub table: Table,
    /// Live counters.
    pub live: Live,
}

impl TableSink for LiveCountersSink {
    type Record = ((String, i64), u64, isize);
    const NAME: &'static str = "LiveCountersSink";

    fn route(((tenant, _), _, _): &Self::Record) -> u64 {
        route(tenant)
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) -> Write {
        let updated_at = datetime(epoch.saturating_mul(self.live.epoch_ms) as i64);
        let rows: Vec<LiveCounterRow> =
            upserts(updates, |(tenant, _): &(String, i64)| tenant.clone())
                .into_iter()
                .map(|((tenant, count), removed)| LiveCounterRow {
                    tenant,
                    counter: "active_visitors_5m".into(),
                    value: if removed { 0 } else { count },
                    updated_at,
                    version: epoch,
                })
                .collect();
        let (table, live) = (self.table.clone(), self.live.clone());
        Box::pin(async move {
            let counts: Vec<(String, i64)> = rows
                .iter()
                .map(|row| (row.tenant.clone(), row.value))
                .collect();
            table.insert("live counters", "live_counters", rows).await;
            live.publish(epoch, |at_ms| {
                counts
                    .into_iter()
                    .map(|(tenant, value)| {
                        let update = LiveUpdate {
                            epoch,
                            at_ms,
                            active_visitors: Some(value),
                            events: None,
                        };
                        (tenant, update)
                    })
                    .collect()
            });
        })
    }

    fn table(&self) -> &Table {
        &self.table
    }
}
