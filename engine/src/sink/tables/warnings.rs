//! `ingestion_warnings`: placeholder ids removed from events (each a refused identity claim),
//! found by the operators, and the gateway's refused events and ignored fields, which reach
//! the engine through Kafka as [`IngestWarning`] records.

use clickhouse::Row;
use operators::{IdField, IdWarning, route};
use schemas::IngestWarning;
use serde::{Deserialize, Serialize};

use super::{Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::metrics::RefusalLabels;
use crate::sink::epoch::Write;

/// One row of `ingestion_warnings`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct WarningRow {
    pub tenant: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub message_id: String,
    pub field: String,
    pub value: String,
    pub event_time: u32,
    pub event_time_ms: i64,
    pub received_at: u32,
    pub detail: String,
}

impl WarningRow {
    /// The row of a placeholder id removed from an event (its claim refused).
    pub fn placeholder_id(warning: &IdWarning) -> Self {
        WarningRow {
            tenant: warning.tenant.clone(),
            kind: "placeholder_id".into(),
            message_id: warning.message_id.clone(),
            field: warning.field.as_str().into(),
            value: warning.id.clone(),
            event_time: datetime(warning.time_ms),
            event_time_ms: warning.time_ms,
            received_at: datetime(warning.received_at_ms),
            detail: String::new(),
        }
    }

    /// The row of a gateway's warning. Its event time is the receipt: a refused event has no
    /// time it can be trusted with, and an ignored field's event is found by its message id.
    pub fn from_gateway(warning: &IngestWarning) -> Self {
        WarningRow {
            tenant: warning.tenant.clone(),
            kind: warning.kind.as_str().into(),
            message_id: warning.message_id.clone(),
            field: warning.field.clone(),
            value: warning.value.clone(),
            event_time: datetime(warning.received_at_ms),
            event_time_ms: warning.received_at_ms,
            received_at: datetime(warning.received_at_ms),
            detail: warning.detail.clone(),
        }
    }
}

/// Writes the gateway's warnings (already counted by the gateway's metrics).
#[derive(Debug)]
pub struct GatewayWarningsSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for GatewayWarningsSink {
    type Record = IngestWarning;
    const NAME: &'static str = "GatewayWarningsSink";

    fn route(warning: &Self::Record) -> u64 {
        route(&warning.message_id)
    }

    fn write(&mut self, _epoch: u64, warnings: Vec<Self::Record>) -> Write {
        let rows: Vec<WarningRow> = warnings.iter().map(WarningRow::from_gateway).collect();
        self.table
            .write("gateway warnings", "ingestion_warnings", rows)
    }

    fn table(&self) -> &Table {
        &self.table
    }
}

/// Writes the warnings and counts the refused claims by field.
#[derive(Debug)]
pub struct WarningsSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for WarningsSink {
    type Record = IdWarning;
    const NAME: &'static str = "WarningsSink";

    fn route(warning: &Self::Record) -> u64 {
        route(&warning.message_id)
    }

    fn write(&mut self, _epoch: u64, warnings: Vec<Self::Record>) -> Write {
        let rows: Vec<WarningRow> = warnings.iter().map(WarningRow::placeholder_id).collect();
        let counts = IdField::ALL.map(|field| {
            let count = warnings.iter().filter(|w| w.field == field).count();
            (field, count as u64)
        });
        let table = self.table.clone();
        Box::pin(async move {
            table
                .insert("ingestion warnings", "ingestion_warnings", rows)
                .await;
            for (field, count) in counts.into_iter().filter(|(_, count)| *count > 0) {
                let labels = RefusalLabels {
                    reason: "placeholder_id",
                    field: field.as_str(),
                };
                table
                    .metrics()
                    .claims_refused
                    .get_or_create(&labels)
                    .inc_by(count);
            }
        })
    }

    fn table(&self) -> &Table {
        &self.table
    }
}
