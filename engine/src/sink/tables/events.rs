//! `events`: every event with its session and person; late events flagged.

use operators::{ArcStr, MessageId};
use std::collections::BTreeMap;

use clickhouse::Row;
use clickhouse::insert::Insert;
use operators::{Enriched, SharedEvent, route};
use rustc_hash::FxHashMap;
use schemas::live::LiveUpdate;
use serde::Serialize;
use serde::ser::SerializeSeq;

use super::{Live, Table, TableSink};
use crate::clickhouse::rows::datetime;
use crate::clickhouse::{ClickHouseWriter, InsertRecord, SinkError};
use crate::sink::epoch::Write;
use crate::sink::upserts::upserts;

/// One row of `events`, borrowed from the event it stores: built only as the insert
/// serializes it (see [`EventRecord`]), so the strings of an event are never copied for its
/// row. A row of owned strings, built on the worker, took ~30 allocations and copies an
/// event there, and replaced the shared event in memory with a copy of about its size.
#[derive(Debug, Row, Serialize)]
#[allow(missing_docs)]
pub struct EventRow<'a> {
    pub tenant: &'a str,
    pub message_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub name: &'a str,
    pub anonymous_id: &'a str,
    pub user_id: &'a str,
    pub previous_id: &'a str,
    pub group_id: &'a str,
    /// `DateTime`: seconds, clamped to its unsigned 32-bit range.
    pub event_time: u32,
    pub event_time_ms: i64,
    pub original_timestamp_ms: Option<i64>,
    pub sent_at_ms: Option<i64>,
    pub received_at: u32,
    pub received_at_ms: i64,
    pub path: &'a str,
    pub url: &'a str,
    pub referrer: &'a str,
    pub title: &'a str,
    pub utm_source: &'a str,
    pub utm_medium: &'a str,
    pub utm_campaign: &'a str,
    pub ip: &'a str,
    pub user_agent: &'a str,
    pub is_bot: u8,
    pub locale: &'a str,
    pub library: &'a str,
    #[serde(rename = "properties.key")]
    pub properties_key: NestedColumn<'a>,
    #[serde(rename = "properties.value")]
    pub properties_value: NestedColumn<'a>,
    #[serde(rename = "traits.key")]
    pub traits_key: NestedColumn<'a>,
    #[serde(rename = "traits.value")]
    pub traits_value: NestedColumn<'a>,
    #[serde(rename = "context.key")]
    pub context_key: NestedColumn<'a>,
    #[serde(rename = "context.value")]
    pub context_value: NestedColumn<'a>,
    pub session_id: &'a str,
    pub person_id: &'a str,
    pub late: u8,
    pub utm_content: &'a str,
    pub utm_term: &'a str,
    pub source: &'a str,
    pub channel: &'a str,
    pub device: &'a str,
    pub browser: &'a str,
    pub browser_version: &'a str,
    pub os: &'a str,
    pub os_version: &'a str,
    pub country: &'a str,
    pub region: &'a str,
    pub city: &'a str,
    pub non_interactive: u8,
    pub version: u64,
}

/// One array of a `Nested(key String, value String)` column (`properties.key`, ...), read
/// from the event's pairs: serialized as the `Array(String)` of their keys or of their values.
#[derive(Debug, Clone, Copy)]
pub struct NestedColumn<'a> {
    pairs: &'a [(String, String)],
    values: bool,
}

impl<'a> NestedColumn<'a> {
    /// The `(keys, values)` columns of `pairs`.
    fn of(pairs: &'a [(String, String)]) -> (Self, Self) {
        let column = |values| NestedColumn { pairs, values };
        (column(false), column(true))
    }
}

impl Serialize for NestedColumn<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // RowBinary writes an array's length first: give it, rather than rely on the
        // iterator's size hint.
        let mut array = serializer.serialize_seq(Some(self.pairs.len()))?;
        for (key, value) in self.pairs {
            array.serialize_element(if self.values { value } else { key })?;
        }
        array.end()
    }
}

impl<'a> EventRow<'a> {
    /// The row of `event` as enriched at `version`.
    pub fn new(
        event: &'a schemas::Event,
        session_id: &'a str,
        person_id: &'a str,
        late: bool,
        version: u64,
    ) -> Self {
        // Long but flat: destructuring every field makes a field added to `Event` and not
        // stored here a compile error.
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
            client,
            location,
            acquisition,
            non_interactive,
        } = event;
        let (properties_key, properties_value) = NestedColumn::of(properties);
        let (traits_key, traits_value) = NestedColumn::of(traits);
        let (context_key, context_value) = NestedColumn::of(context);
        EventRow {
            tenant,
            message_id,
            kind: kind.as_str(),
            name,
            anonymous_id,
            user_id,
            previous_id,
            group_id,
            event_time: datetime(*timestamp_ms),
            event_time_ms: *timestamp_ms,
            original_timestamp_ms: *original_timestamp_ms,
            sent_at_ms: *sent_at_ms,
            received_at: datetime(*received_at_ms),
            received_at_ms: *received_at_ms,
            path: &page.path,
            url: &page.url,
            referrer: &page.referrer,
            title: &page.title,
            utm_source: &campaign.source,
            utm_medium: &campaign.medium,
            utm_campaign: &campaign.name,
            ip,
            user_agent,
            is_bot: u8::from(*is_bot),
            locale,
            library,
            properties_key,
            properties_value,
            traits_key,
            traits_value,
            context_key,
            context_value,
            session_id,
            person_id,
            late: u8::from(late),
            utm_content: &campaign.content,
            utm_term: &campaign.term,
            source: &acquisition.source,
            channel: &acquisition.channel,
            device: &client.device,
            browser: &client.browser,
            browser_version: &client.browser_version,
            os: &client.os,
            os_version: &client.os_version,
            country: &location.country,
            region: &location.region,
            city: &location.city,
            non_interactive: u8::from(*non_interactive),
            version,
        }
    }
}

/// An event to store with its attribution, as the events sinks hand it to the insert: the
/// shared event itself (a reference count, not a copy), its session and person, and the
/// row's version. Its [`EventRow`] is built and serialized on the I/O runtime.
#[derive(Debug)]
pub struct EventRecord {
    event: SharedEvent,
    /// `None` for a late event, stored without a session.
    session_id: Option<MessageId>,
    /// Empty for a late event.
    person_id: ArcStr,
    late: bool,
    version: u64,
}

impl InsertRecord for EventRecord {
    type Row = EventRow<'static>;

    async fn write_to(
        &self,
        insert: &mut Insert<EventRow<'static>>,
    ) -> clickhouse::error::Result<()> {
        let session_id = self.session_id.as_ref().map(MessageId::text);
        let row = EventRow::new(
            &self.event,
            session_id.as_deref().unwrap_or_default(),
            &self.person_id,
            self.late,
            self.version,
        );
        insert.write(&row).await
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
    /// The worker that writes the event: by its message id's text, the same for both kinds.
    fn route(&self) -> u64 {
        match self {
            EventUpdate::Arrived(event) => route(event.message_id.as_str()),
            EventUpdate::Attributed(enriched) => route(&*enriched.event.message_id.text()),
        }
    }
}

/// Writes on-time events and publishes each tenant's count. An event that arrived in the
/// batch is inserted whole with its attribution; an event stored earlier whose session or
/// person changed (a late event merged sessions, an identity merge re-attributed it) is
/// rewritten by [`correct_events`], so the dataflow keeps only compact
/// [`operators::Activity`] records, not whole events.
///
#[derive(Debug)]
pub struct EventsSink {
    /// Where rows go.
    pub table: Table,
    /// Live event counts.
    pub live: Live,
}

/// What the events sink needs of an attribution. Netting these instead of whole
/// [`Enriched`] records (whose hash and comparison walk the event's landing, detail and ids)
/// took `upserts` from a fifth of the engine's samples in `bench pipeline` to a few percent.
/// An event's record never changes but for its session and person, so they identify it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Attribution {
    tenant: ArcStr,
    message_id: MessageId,
    session_id: MessageId,
    person_id: ArcStr,
    timestamp_ms: i64,
}

impl From<&Enriched> for Attribution {
    fn from(enriched: &Enriched) -> Self {
        Attribution {
            tenant: enriched.event.tenant().clone(),
            message_id: enriched.event.message_id.clone(),
            session_id: enriched.session_id.clone(),
            person_id: enriched.person_id.clone(),
            timestamp_ms: enriched.event.timestamp_ms,
        }
    }
}

/// A stored event's new `(event_time, message_id, session_id, person_id)`, by tenant.
type Corrections = BTreeMap<ArcStr, Vec<(u32, String, String, ArcStr)>>;

/// Corrections are sent in statements of about this many bytes of ids: their SQL stays within
/// the `max_query_size` the statement sets (16 MiB), whatever the ids' lengths, and one
/// correction of very long ids still goes through alone. A statement reads every granule
/// (8,192 rows) that holds one of its keys, so fewer, larger statements read less: 64 KiB
/// statements reread the whole table of `bench pipeline` a dozen times per second.
const CORRECTION_BYTES_PER_STATEMENT: usize = 1024 * 1024;

/// Splits `corrections` into statements of about [`CORRECTION_BYTES_PER_STATEMENT`] bytes of
/// ids (the message id appears three times in a statement).
fn statements<'a, 'c>(
    corrections: &'c [(u32, &'a str, &'a str, &'a str)],
) -> impl Iterator<Item = &'c [(u32, &'a str, &'a str, &'a str)]> {
    let mut rest = corrections;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let end = rest
            .iter()
            .position(|(_, message_id, session_id, person_id)| {
                bytes += 3 * message_id.len() + session_id.len() + person_id.len() + 32;
                bytes > CORRECTION_BYTES_PER_STATEMENT
            })
            .map_or(rest.len(), |over| over.max(1));
        let (statement, after) = rest.split_at(end);
        rest = after;
        Some(statement)
    })
}

impl TableSink for EventsSink {
    type Record = (EventUpdate, u64, isize);
    const NAME: &'static str = "EventsSink";

    fn route((update, _, _): &Self::Record) -> u64 {
        update.route()
    }

    fn write(&mut self, epoch: u64, updates: Vec<Self::Record>) -> Write {
        let mut arrivals = Vec::new();
        let mut attributions = Vec::with_capacity(updates.len());
        for (update, time, diff) in updates {
            match update {
                EventUpdate::Arrived(event) => arrivals.push(event),
                EventUpdate::Attributed(enriched) => {
                    attributions.push((Attribution::from(&enriched), time, diff));
                }
            }
        }
        let mut arrived: FxHashMap<(&str, MessageId), &SharedEvent> = arrivals
            .iter()
            .map(|e| ((e.tenant.as_str(), MessageId::new(&e.message_id)), e))
            .collect();
        let current = upserts(attributions, |a: &Attribution| {
            (a.tenant.clone(), a.message_id.clone())
        });
        let mut rows = Vec::with_capacity(arrived.len());
        let mut corrections: Corrections = BTreeMap::new();
        // An event never disappears: a lone retraction only means it moved, and the move's
        // insertion carries its new attribution.
        for (attribution, _) in current.iter().filter(|(_, removed)| !removed) {
            match arrived.remove(&(&*attribution.tenant, attribution.message_id.clone())) {
                Some(event) => rows.push(EventRecord {
                    event: SharedEvent::clone(event),
                    session_id: Some(attribution.session_id.clone()),
                    person_id: attribution.person_id.clone(),
                    late: false,
                    version: epoch,
                }),
                None => corrections
                    .entry(attribution.tenant.clone())
                    .or_default()
                    .push((
                        datetime(attribution.timestamp_ms),
                        attribution.message_id.to_string(),
                        attribution.session_id.to_string(),
                        attribution.person_id.clone(),
                    )),
            }
        }
        // Every on-time event is attributed in the epoch it arrives in, unless the state
        // already held its message id: a retry received after the dedup horizon. Its row is
        // stored already, with its attribution; writing it again would erase that.
        for event in arrived.into_values() {
            tracing::warn!(tenant = %event.tenant, message_id = %event.message_id, "a repeated event past the dedup horizon was not stored again");
        }
        let mut per_tenant: BTreeMap<String, u64> = BTreeMap::new();
        for row in &rows {
            *per_tenant.entry(row.event.tenant.clone()).or_default() += 1;
        }
        let (table, live) = (self.table.clone(), self.live.clone());
        Box::pin(async move {
            let written = rows.len() as u64;
            table.insert("events", "events", rows).await;
            correct(&table, epoch, corrections).await;
            table.metrics().events_written.inc_by(written);
            publish(&live, epoch, per_tenant);
        })
    }

    fn table(&self) -> &Table {
        &self.table
    }
}

/// Applies an epoch's corrections. Each names an event stored by an earlier batch of this
/// worker (an event and its attribution are routed alike, and a sink writes its batches in
/// order), or by the run a restart replays.
async fn correct(table: &Table, epoch: u64, corrections: Corrections) {
    for (tenant, corrections) in corrections {
        let corrections: Vec<(u32, &str, &str, &str)> = corrections
            .iter()
            .map(|(time, message_id, session_id, person_id)| {
                (
                    *time,
                    message_id.as_str(),
                    session_id.as_str(),
                    &**person_id,
                )
            })
            .collect();
        for chunk in statements(&corrections) {
            table
                .runtime
                .retry("event corrections", || {
                    correct_events(&table.writer, epoch, &tenant, chunk)
                })
                .await;
            table.metrics().event_corrections.inc_by(chunk.len() as u64);
        }
    }
}

/// Rewrites the session and person of stored `events` rows of `tenant`, each row's other
/// columns unchanged, at version `epoch`. `corrections` are `(event_time, message_id,
/// session_id, person_id)`, `event_time` in seconds as stored (the sort key's prefix, so
/// the lookup reads only the rows' granules).
///
/// The new row is built by ClickHouse from any stored version of the row (their copied
/// columns are equal), so the engine need not keep whole events in memory to correct them.
/// Replaying it is harmless: the columns it copies never change, and the two it replaces get
/// the same values again.
/// (Written for ClickHouse 18.16, Debian's: no `SELECT * REPLACE`, no arrays in `IN`.)
pub async fn correct_events(
    writer: &ClickHouseWriter,
    epoch: u64,
    tenant: &str,
    corrections: &[(u32, &str, &str, &str)],
) -> Result<(), SinkError> {
    if corrections.is_empty() {
        return Ok(());
    }
    let times: Vec<u32> = corrections.iter().map(|c| c.0).collect();
    let ids: Vec<&str> = corrections.iter().map(|c| c.1).collect();
    let sessions: Vec<&str> = corrections.iter().map(|c| c.2).collect();
    let persons: Vec<&str> = corrections.iter().map(|c| c.3).collect();
    writer
        .client()
        .query(&CORRECT_EVENTS_SQL)
        .with_setting("max_query_size", "16777216")
        .bind(&ids)
        .bind(&sessions)
        .bind(&ids)
        .bind(&persons)
        .bind(epoch)
        .bind(tenant)
        .bind(&times)
        .bind(&ids)
        .execute()
        .await?;
    Ok(())
}

/// The statement of [`correct_events`]: every column of `events` copied,
/// but `session_id`, `person_id` and `version`. Its parameters: message ids and their new
/// sessions, message ids and their new persons, the version, the tenant, the keys' event
/// times and message ids (two arrays of scalars).
///
/// Measured on ClickHouse 18.16, which made the pipeline five times slower before:
/// - the keys go in as two arrays of scalars, zipped into tuples by the server: an array
///   literal of tuples takes time quadratic in its length to analyse (4.6 s for 2,000 keys,
///   the size of one statement, against 0.08 s for the whole lookup with two arrays);
/// - the rows are found by their sort key `(tenant, event_time, message_id)` alone, so the
///   primary index picks the granules holding them. No `FINAL` and no `event_time` range:
///   `FINAL` with a range condition merges every row of the range (20 s for 2 M rows), and
///   the copied columns are the same in every stored version of a row, so any one of them
///   will do (`LIMIT 1 BY`).
static CORRECT_EVENTS_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(correct_events_sql);

fn correct_events_sql() -> String {
    let columns = <EventRow<'static> as Row>::COLUMN_NAMES;
    let select: Vec<String> = columns
        .iter()
        .map(|&column| match column {
            "session_id" => "transform(message_id, ?, ?, session_id)".to_owned(),
            "person_id" => "transform(message_id, ?, ?, person_id)".to_owned(),
            "version" => "toUInt64(?)".to_owned(),
            other => format!("`{other}`"),
        })
        .collect();
    let insert: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
    format!(
        "INSERT INTO events ({}) SELECT {} FROM events \
         WHERE tenant = ? AND (event_time, message_id) IN \
         (SELECT toDateTime(tupleElement(key, 1)), tupleElement(key, 2) \
          FROM (SELECT arrayJoin(arrayMap((t, m) -> (t, m), ?, ?)) AS key)) \
         LIMIT 1 BY message_id",
        insert.join(", "),
        select.join(", ")
    )
}

/// Publishes each tenant's count of events written at `epoch`.
fn publish(live: &Live, epoch: u64, per_tenant: BTreeMap<String, u64>) {
    live.publish(epoch, |at_ms| {
        per_tenant
            .into_iter()
            .map(|(tenant, events)| {
                let update = LiveUpdate {
                    epoch,
                    at_ms,
                    active_visitors: None,
                    events: Some(events),
                };
                (tenant, update)
            })
            .collect()
    });
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

    fn write(&mut self, epoch: u64, events: Vec<Self::Record>) -> Write {
        let rows: Vec<EventRecord> = events
            .into_iter()
            .map(|event| EventRecord {
                event,
                session_id: None,
                person_id: ArcStr::default(),
                late: true,
                version: epoch,
            })
            .collect();
        let table = self.table.clone();
        Box::pin(async move {
            let count = rows.len() as u64;
            table.insert("late events", "events", rows).await;
            table.metrics().late_events.inc_by(count);
        })
    }

    fn table(&self) -> &Table {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of the borrowed row reads the field it names: an event whose every field
    /// holds its own value, against the columns written out by hand (RowBinary is positional
    /// and unchecked, so a field wired to the wrong column would store silently).
    #[test]
    fn every_column_of_the_row_reads_its_own_field() {
        let mut event =
            schemas::Event::new("t", "m", schemas::EventKind::Identify, 1_700_000_000_123);
        event.name = "nm".into();
        event.anonymous_id = "an".into();
        event.user_id = "us".into();
        event.previous_id = "pr".into();
        event.group_id = "gr".into();
        event.original_timestamp_ms = Some(11);
        event.sent_at_ms = None;
        event.received_at_ms = 1_700_000_005_999;
        event.page.path = "pa".into();
        event.page.url = "ur".into();
        event.page.referrer = "re".into();
        event.page.title = "ti".into();
        event.campaign.source = "cs".into();
        event.campaign.medium = "cm".into();
        event.campaign.name = "cn".into();
        event.campaign.content = "cc".into();
        event.campaign.term = "ct".into();
        event.ip = "ip".into();
        event.user_agent = "ua".into();
        event.is_bot = true;
        event.locale = "lo".into();
        event.library = "li".into();
        event.properties = vec![("pk1".into(), "pv1".into()), ("pk2".into(), "pv2".into())];
        event.traits = vec![("tk".into(), "tv".into())];
        event.context = vec![("xk".into(), "xv".into())];
        event.client.device = "de".into();
        event.client.browser = "br".into();
        event.client.browser_version = "bv".into();
        event.client.os = "os".into();
        event.client.os_version = "ov".into();
        event.location.country = "co".into();
        event.location.region = "rg".into();
        event.location.city = "ci".into();
        event.acquisition.source = "as".into();
        event.acquisition.channel = "ac".into();
        event.non_interactive = false;
        let row = EventRow::new(&event, "se", "pe", true, 42);
        use serde_json::{Value, json};
        // The string columns, then the others (numbers, nulls, arrays).
        let strings = [
            ("tenant", "t"),
            ("message_id", "m"),
            ("type", "identify"),
            ("name", "nm"),
            ("anonymous_id", "an"),
            ("user_id", "us"),
            ("previous_id", "pr"),
            ("group_id", "gr"),
            ("path", "pa"),
            ("url", "ur"),
            ("referrer", "re"),
            ("title", "ti"),
            ("utm_source", "cs"),
            ("utm_medium", "cm"),
            ("utm_campaign", "cn"),
            ("ip", "ip"),
            ("user_agent", "ua"),
            ("locale", "lo"),
            ("library", "li"),
            ("session_id", "se"),
            ("person_id", "pe"),
            ("utm_content", "cc"),
            ("utm_term", "ct"),
            ("source", "as"),
            ("channel", "ac"),
            ("device", "de"),
            ("browser", "br"),
            ("browser_version", "bv"),
            ("os", "os"),
            ("os_version", "ov"),
            ("country", "co"),
            ("region", "rg"),
            ("city", "ci"),
        ];
        let others = [
            ("event_time", json!(1_700_000_000)),
            ("event_time_ms", json!(1_700_000_000_123_i64)),
            ("original_timestamp_ms", json!(11)),
            ("sent_at_ms", json!(null)),
            ("received_at", json!(1_700_000_005)),
            ("received_at_ms", json!(1_700_000_005_999_i64)),
            ("is_bot", json!(1)),
            ("properties.key", json!(["pk1", "pk2"])),
            ("properties.value", json!(["pv1", "pv2"])),
            ("traits.key", json!(["tk"])),
            ("traits.value", json!(["tv"])),
            ("context.key", json!(["xk"])),
            ("context.value", json!(["xv"])),
            ("late", json!(1)),
            ("non_interactive", json!(0)),
            ("version", json!(42)),
        ];
        let expected: serde_json::Map<String, Value> = strings
            .into_iter()
            .map(|(column, text)| (column, json!(text)))
            .chain(others)
            .map(|(column, value)| (column.to_owned(), value))
            .collect();
        assert_eq!(
            serde_json::to_value(&row).expect("row"),
            Value::Object(expected)
        );
    }

    /// Statements hold every correction once, in order, each within the byte budget unless a
    /// single correction is larger than it.
    #[test]
    fn corrections_are_split_by_the_bytes_of_their_ids() {
        let long = "x".repeat(700 * 1024);
        let ids: Vec<String> = (0..30_000).map(|i| format!("message-{i:05}")).collect();
        let mut corrections: Vec<(u32, &str, &str, &str)> =
            ids.iter().map(|id| (7, id.as_str(), "s", "p")).collect();
        corrections.insert(15_000, (7, &long, "s", "p"));
        let split: Vec<_> = statements(&corrections).collect();
        assert_eq!(split.concat(), corrections);
        assert!(split.len() > 2, "{} statements", split.len());
        for statement in &split {
            let bytes: usize = statement
                .iter()
                .map(|(_, m, s, p)| 3 * m.len() + s.len() + p.len() + 32)
                .sum();
            assert!(
                bytes <= CORRECTION_BYTES_PER_STATEMENT || statement.len() == 1,
                "{bytes} bytes in {} corrections",
                statement.len()
            );
        }
        assert_eq!(statements(&[]).count(), 0);
    }
}
