//! `events`: every event with its session and person; late events flagged.

use std::collections::BTreeMap;

use clickhouse::Row;
use operators::{Enriched, SharedEvent, route};
use rustc_hash::FxHashMap;
use schemas::live::LiveUpdate;
use serde::{Deserialize, Serialize};

use super::{Live, Table, TableSink};
use crate::sink::clickhouse::rows::datetime;
use crate::sink::epoch::upserts;

/// One row of `events`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct EventRow {
    pub tenant: String,
    pub message_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub anonymous_id: String,
    pub user_id: String,
    pub previous_id: String,
    pub group_id: String,
    /// `DateTime`: seconds, clamped to its unsigned 32-bit range.
    pub event_time: u32,
    pub event_time_ms: i64,
    pub original_timestamp_ms: Option<i64>,
    pub sent_at_ms: Option<i64>,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub path: String,
    pub url: String,
    pub referrer: String,
    pub title: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub ip: String,
    pub user_agent: String,
    pub is_bot: u8,
    pub locale: String,
    pub library: String,
    #[serde(rename = "properties.key")]
    pub properties_key: Vec<String>,
    #[serde(rename = "properties.value")]
    pub properties_value: Vec<String>,
    #[serde(rename = "traits.key")]
    pub traits_key: Vec<String>,
    #[serde(rename = "traits.value")]
    pub traits_value: Vec<String>,
    #[serde(rename = "context.key")]
    pub context_key: Vec<String>,
    #[serde(rename = "context.value")]
    pub context_value: Vec<String>,
    pub session_id: String,
    pub person_id: String,
    pub late: u8,
    pub version: u64,
}

fn unzip(pairs: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    pairs.iter().cloned().unzip()
}

impl EventRow {
    /// The row of `event` as enriched at `version`.
    pub fn new(
        event: &schemas::Event,
        session_id: &str,
        person_id: &str,
        late: bool,
        version: u64,
    ) -> Self {
        let schemas::Event {
            tenant,
            message_id,
            kind,
            name,
            anonymous_id,
            user_id,
            previous_id,
            group_id,
            timestamp_ms,
            original_timestamp_ms,
            sent_at_ms,
            received_at_ms,
            page,
            campaign,
            ip,
            user_agent,
            is_bot,
            locale,
            library,
            properties,
            traits,
            context,
        } = event;
        let (properties_key, properties_value) = unzip(properties);
        let (traits_key, traits_value) = unzip(traits);
        let (context_key, context_value) = unzip(context);
        EventRow {
            tenant: tenant.clone(),
            message_id: message_id.clone(),
            kind: kind.as_str().to_owned(),
            name: name.clone(),
            anonymous_id: anonymous_id.clone(),
            user_id: user_id.clone(),
            previous_id: previous_id.clone(),
            group_id: group_id.clone(),
            event_time: datetime(*timestamp_ms),
            event_time_ms: *timestamp_ms,
            original_timestamp_ms: *original_timestamp_ms,
            sent_at_ms: *sent_at_ms,
            received_at: datetime(*received_at_ms),
            received_at_ms: *received_at_ms,
            path: page.path.clone(),
            url: page.url.clone(),
            referrer: page.referrer.clone(),
            title: page.title.clone(),
            utm_source: campaign.source.clone(),
            utm_medium: campaign.medium.clone(),
            utm_campaign: campaign.name.clone(),
            ip: ip.clone(),
            user_agent: user_agent.clone(),
            is_bot: u8::from(*is_bot),
            locale: locale.clone(),
            library: library.clone(),
            properties_key,
            properties_value,
            traits_key,
            traits_value,
            context_key,
            context_value,
            session_id: session_id.to_owned(),
            person_id: person_id.to_owned(),
            late: u8::from(late),
            version,
        }
    }
}

/// What the events sink receives, routed by message id so that an event and its attribution
/// meet on one worker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum EventUpdate {
    /// The whole event, once, in the epoch it arrived in.
    Arrived(SharedEvent),
    /// A change of its session or person (a collection update).
    Attributed(Enriched),
}

impl EventUpdate {
    fn message_id(&self) -> &str {
        match self {
            EventUpdate::Arrived(event) => &event.message_id,
            EventUpdate::Attributed(enriched) => &enriched.event.message_id,
        }
    }
}

/// Writes on-time events and publishes each tenant's count. An event that arrived in the
/// batch is inserted whole with its attribution; an event stored earlier whose session or
/// person changed (a late event merged sessions, an identity merge re-attributed it) is
/// rewritten by [`ClickHouseWriter::correct_events`], so the dataflow keeps only compact
/// [`operators::Activity`] records, not whole events.
///
/// [`ClickHouseWriter::correct_events`]: crate::sink::clickhouse::ClickHouseWriter::correct_events
#[derive(Debug)]
pub struct EventsSink {
    /// Where rows go.
    pub table: Table,
    /// Live event counts.
    pub live: Live,
}

/// A stored event's new `(event_time, message_id, session_id, person_id)`, by tenant.
type Corrections<'a> = BTreeMap<&'a str, Vec<(u32, &'a str, &'a str, &'a str)>>;

/// Rows are sent in statements of at most this many corrections, to stay well inside
/// ClickHouse's `max_query_size` (256 KiB): a correction is about 200 bytes of SQL.
const CORRECTIONS_PER_STATEMENT: usize = 500;

impl TableSink for EventsSink {
    type Record = (EventUpdate, u64, isize);
    const NAME: &'static str = "EventsSink";

    fn route((update, _, _): &Self::Record) -> u64 {
        route(update.message_id())
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) {
        let mut arrived: FxHashMap<(String, String), SharedEvent> = FxHashMap::default();
        let mut attributions = Vec::with_capacity(updates.len());
        for (update, time, diff) in updates {
            match update {
                EventUpdate::Arrived(event) => {
                    let key = (event.tenant.clone(), event.message_id.clone());
                    arrived.insert(key, event);
                }
                EventUpdate::Attributed(enriched) => attributions.push((enriched, time, diff)),
            }
        }
        let current = upserts(attributions, |e: &Enriched| {
            (e.event.tenant.clone(), e.event.message_id.clone())
        });
        let mut rows = Vec::with_capacity(arrived.len());
        let mut corrections: Corrections = BTreeMap::new();
        // An event never disappears: a lone retraction only means it moved, and the move's
        // insertion carries its new attribution.
        for (enriched, _) in current.iter().filter(|(_, removed)| !removed) {
            let (tenant, message_id) = (&*enriched.event.tenant, &*enriched.event.message_id);
            match arrived.remove(&(tenant.to_owned(), message_id.to_owned())) {
                Some(event) => rows.push(EventRow::new(
                    &event,
                    &enriched.session_id,
                    &enriched.person_id,
                    false,
                    epoch,
                )),
                None => corrections.entry(tenant).or_default().push((
                    datetime(enriched.event.timestamp_ms),
                    message_id,
                    &enriched.session_id,
                    &enriched.person_id,
                )),
            }
        }
        // Every on-time event is attributed in the epoch it arrives in; one that was not is
        // still stored, without session or person, rather than lost.
        for event in arrived.into_values() {
            tracing::error!(message_id = %event.message_id, "event arrived without attribution");
            rows.push(EventRow::new(&event, "", "", false, epoch));
        }
        self.table.insert("events", "events", &rows);
        self.correct(epoch, &corrections);
        self.table
            .metrics()
            .events_written
            .inc_by(rows.len() as u64);
        self.publish(epoch, &rows);
    }
}

impl EventsSink {
    /// Applies an epoch's corrections, after its new rows (a correction may name an event
    /// inserted earlier in the same batch).
    fn correct(&self, epoch: u64, corrections: &Corrections) {
        for (tenant, corrections) in corrections {
            for chunk in corrections.chunks(CORRECTIONS_PER_STATEMENT) {
                self.table
                    .runtime
                    .write_with_retry("event corrections", || {
                        self.table.writer.correct_events(epoch, tenant, chunk)
                    });
                self.table
                    .metrics()
                    .event_corrections
                    .inc_by(chunk.len() as u64);
            }
        }
    }

    fn publish(&self, epoch: u64, rows: &[EventRow]) {
        self.live.publish(epoch, |at_ms| {
            let mut per_tenant: BTreeMap<&str, u64> = BTreeMap::new();
            for row in rows {
                *per_tenant.entry(row.tenant.as_str()).or_default() += 1;
            }
            per_tenant
                .into_iter()
                .map(|(tenant, events)| {
                    let update = LiveUpdate {
                        epoch,
                        at_ms,
                        active_visitors: None,
                        events: Some(events),
                    };
                    (tenant.to_owned(), update)
                })
                .collect()
        });
    }
}

/// Writes events later than the lateness horizon: stored and flagged, never applied to state.
#[derive(Debug)]
pub struct LateEventsSink {
    /// Where rows go.
    pub table: Table,
}

impl TableSink for LateEventsSink {
    type Record = SharedEvent;
    const NAME: &'static str = "LateEventsSink";

    fn route(event: &Self::Record) -> u64 {
        route(&event.message_id)
    }

    fn write(&mut self, epoch: u64, events: Vec<Self::Record>) {
        let rows: Vec<EventRow> = events
            .iter()
            .map(|e| EventRow::new(e, "", "", true, epoch))
            .collect();
        self.table.insert("late events", "events", &rows);
        self.table.metrics().late_events.inc_by(rows.len() as u64);
    }
}
