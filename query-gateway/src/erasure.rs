//! Erasure (GDPR Art. 17), suppression and access (Art. 15) for admin keys.
//!
//! The query gateway takes the request and the engine carries it out:
//! - `DELETE /api/persons/{id}` resolves every id of the person (the `identities` rows of the
//!   id's person), hashes each with the deployment's salt ([`schemas::erasure::id_hash`]),
//!   records the request as `pending` in `_deletions` and writes an `erase` record to the
//!   control topic with this gateway's Kafka producer (acks from all replicas). The ids never
//!   leave this process: the topic and the table hold hashes.
//! - Text that may quote an id anywhere, which hashes cannot find, is cleared here while the
//!   ids are in hand: Ask's log (`ask_log`: questions, statements, details), undecodable
//!   records (`_dead_letters`, whose payloads are hex) and Ask's translation cache in Redis.
//! - The engine drops the person's events from the dataflow at the epoch it reads the record
//!   (and suppresses later ones), then deletes the stored rows and writes the request's
//!   `completed` row with the rows removed per table (`engine/src/sink/erasure.rs`);
//!   `GET /api/deletions/{request_id}` reads it.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::{Client, Row};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::ControlMessage;
use schemas::erasure::id_hash;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ApiError;

/// How long a control record may take to be acknowledged before the request fails (503).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the gateway waits for its own text-clearing mutations.
const MUTATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Where erasure requests go.
#[derive(Clone)]
pub struct ErasureService {
    producer: FutureProducer,
    control_topic: String,
    salt: String,
    /// A client that may write (the gateway's own is read-only).
    writer: Client,
    /// [`LIFT_DELAY_MS`], or a test's.
    lift_delay_ms: i64,
}

impl std::fmt::Debug for ErasureService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureService")
            .field("control_topic", &self.control_topic)
            .finish_non_exhaustive()
    }
}

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ErasureSetupError {
    /// The salt is empty.
    #[error("the erasure salt is empty: set --erasure-salt (the engine's erasure.salt)")]
    NoSalt,
    /// The producer could not be created.
    #[error("creating the Kafka producer")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl ErasureService {
    /// Requests go to `control_topic` at `brokers`; ids are hashed with `salt`; `writer`
    /// writes `_deletions` and clears the gateway's text tables.
    pub fn new(
        brokers: &str,
        control_topic: &str,
        salt: &str,
        writer: Client,
    ) -> Result<ErasureService, ErasureSetupError> {
        if salt.is_empty() {
            return Err(ErasureSetupError::NoSalt);
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "15000")
            .create()?;
        Ok(ErasureService {
            producer,
            control_topic: control_topic.to_owned(),
            salt: salt.to_owned(),
            writer,
            lift_delay_ms: LIFT_DELAY_MS,
        })
    }

    /// Lifts take effect this long after they are asked (tests; the default is
    /// [`LIFT_DELAY_MS`]).
    pub fn with_lift_delay(mut self, delay: Duration) -> ErasureService {
        self.lift_delay_ms = delay.as_millis() as i64;
        self
    }

    /// Hashes `id` of `tenant` with the deployment's salt.
    pub fn hash(&self, tenant: &str, id: &str) -> String {
        id_hash(&self.salt, tenant, id)
    }

    async fn send(&self, tenant: &str, message: &ControlMessage) -> Result<(), ApiError> {
        let payload = serde_json::to_vec(message).map_err(|error| {
            tracing::error!(%error, "cannot encode a control record");
            ApiError::Unavailable
        })?;
        let record = FutureRecord::to(&self.control_topic)
            .key(tenant)
            .payload(&payload);
        self.producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(error, _)| {
                tracing::error!(error = %error, "the control record was not written; answering 503");
                ApiError::Unavailable
            })
    }
}

/// A row of `_deletions` (the engine's `DeletionRow`, the same columns).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct DeletionRow {
    /// The request's id.
    pub request_id: String,
    /// Tenant.
    pub tenant: String,
    /// `person`, `tenant`, or `rollups` (an erasure's second recount, `{request}:rollups`).
    pub kind: String,
    /// The salted hashes of the person's ids.
    pub id_hashes: Vec<String>,
    /// [`key_id`] of the admin key that asked.
    pub requester_key_id: String,
    /// Unix ms.
    pub requested_at_ms: i64,
    /// `pending`, `completed` or `failed` (the control record could not be written).
    pub status: String,
    /// Unix ms; 0 until completed.
    pub completed_at_ms: i64,
    /// Tables rows were removed from.
    pub removed_tables: Vec<String>,
    /// Rows removed from each.
    pub removed_rows: Vec<u64>,
    /// Higher replaces lower.
    pub version: u64,
}

/// What a key is called in the audit table: the first 16 hex digits of its SHA-256, so the
/// requester is known without the key being stored.
pub fn key_id(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_owned()
}

/// The answer of `DELETE /api/persons/{id}` (202) and `GET /api/deletions/{request_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deletion {
    /// The request's id.
    pub request_id: String,
    /// `person`, `tenant`, or `rollups` (an erasure's second recount, `{request}:rollups`).
    pub kind: String,
    /// `pending`, `completed` or `failed`.
    pub status: String,
    /// How many ids of the person it covers (hashes in the control record).
    pub ids: usize,
    /// When it was accepted, RFC 3339 UTC.
    pub requested_at: String,
    /// When every table was clean, RFC 3339 UTC; null while pending.
    pub completed_at: Option<String>,
    /// Rows removed per table (the gateway's text tables at once, the rest at completion).
    #[schema(value_type = Object)]
    pub rows_removed: serde_json::Map<String, Value>,
}

impl From<DeletionRow> for Deletion {
    fn from(row: DeletionRow) -> Deletion {
        let rfc3339 = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default()
        };
        let mut rows_removed = serde_json::Map::new();
        for (table, rows) in row.removed_tables.iter().zip(&row.removed_rows) {
            let total = rows_removed.get(table).and_then(Value::as_u64).unwrap_or(0) + rows;
            rows_removed.insert(table.clone(), total.into());
        }
        Deletion {
            request_id: row.request_id,
            kind: row.kind,
            ids: row.id_hashes.len(),
            requested_at: rfc3339(row.requested_at_ms),
            completed_at: (row.status == "completed").then(|| rfc3339(row.completed_at_ms)),
            status: row.status,
            rows_removed,
        }
    }
}

#[derive(Debug, Row, Deserialize)]
struct IdRow {
    id: String,
}

#[derive(Debug, Row, Deserialize)]
struct PersonRow {
    person_id: String,
}

/// Every id of the person `id` belongs to: `id`, its person's id, and every id linked to that
/// person (`identities`, as the engine last wrote it).
pub async fn person_ids(client: &Client, tenant: &str, id: &str) -> Result<Vec<String>, ApiError> {
    // No alias named like a column: ClickHouse would read `id` in WHERE as the alias.
    let persons: Vec<PersonRow> = client
        .query(
            "SELECT person_id FROM identities FINAL \
             WHERE tenant = ? AND id = ? AND deleted = 0",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all()
        .await?;
    let mut ids = vec![id.to_owned()];
    for person in persons {
        let linked: Vec<IdRow> = client
            .query(
                "SELECT id FROM identities FINAL \
                 WHERE tenant = ? AND person_id = ? AND deleted = 0",
            )
            .bind(tenant)
            .bind(&person.person_id)
            .fetch_all()
            .await?;
        ids.push(person.person_id);
        ids.extend(linked.into_iter().map(|row| row.id));
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Accepts an erasure: clears the text tables, records the request, writes the control
/// record. Returns the pending request.
pub async fn erase_person(
    service: &ErasureService,
    reader: &Client,
    ask: &crate::ask::AskService,
    tenant: &str,
    id: &str,
    requester_key_id: String,
) -> Result<Deletion, ApiError> {
    refuse_placeholder(id)?;
    let mut ids = person_ids(reader, tenant, id).await?;
    // A placeholder is nobody's id (the engine links nothing by it): erasing it would erase
    // everyone whose integration sent it.
    ids.retain(|id| !schemas::definitions::is_default_placeholder(id));
    let mut row = DeletionRow {
        request_id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_owned(),
        kind: "person".into(),
        id_hashes: ids.iter().map(|id| service.hash(tenant, id)).collect(),
        requester_key_id,
        requested_at_ms: chrono::Utc::now().timestamp_millis(),
        status: "pending".into(),
        completed_at_ms: 0,
        removed_tables: Vec::new(),
        removed_rows: Vec::new(),
        version: 1,
    };
    for (table, rows) in clear_text(&service.writer, tenant, &ids).await? {
        row.removed_tables.push(table.to_owned());
        row.removed_rows.push(rows);
    }
    let cached = ask.forget(tenant, &ids).await;
    row.removed_tables.push("redis:ask_translations".into());
    row.removed_rows.push(cached);
    record(&service.writer, &row).await?;
    let message = ControlMessage::Erase {
        request_id: row.request_id.clone(),
        tenant: tenant.to_owned(),
        id_hashes: row.id_hashes.clone(),
        requested_at_ms: row.requested_at_ms,
        salt_check: schemas::erasure::salt_check(&service.salt),
    };
    if let Err(error) = service.send(tenant, &message).await {
        row.status = "failed".into();
        row.version += 1;
        if let Err(record_error) = record(&service.writer, &row).await {
            tracing::error!(error = %record_error, request_id = %row.request_id, "cannot mark the request failed");
        }
        return Err(error);
    }
    Ok(row.into())
}

/// How long after a lift is requested it takes effect: every engine worker reads the record
/// before it decides an event received after it, whatever the two topics' lag (a suppressed
/// event is dropped for good, so a lift must never be read too late for one). Twice the
/// longest a control record may take to be acknowledged ([`DELIVERY_TIMEOUT`]); the gateways'
/// and the engine's clocks are assumed to agree within the rest.
pub const LIFT_DELAY_MS: i64 = 30_000;

/// Refuses an empty or placeholder id (`undefined`, `null`, ...: see
/// [`schemas::definitions::DEFAULT_PLACEHOLDER_IDS`]) with a 400 naming it.
fn refuse_placeholder(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || schemas::definitions::is_default_placeholder(id) {
        return Err(ApiError::BadParameter {
            parameter: "id".into(),
            message: format!("{id:?} is a placeholder id, nobody's: it cannot be erased or lifted"),
        });
    }
    Ok(())
}

/// Lifts the suppression of `id`: its events received from the answer's time on (now plus
/// the service's lift delay, [`LIFT_DELAY_MS`] by default) are kept again.
pub async fn lift_suppression(
    service: &ErasureService,
    tenant: &str,
    id: &str,
) -> Result<i64, ApiError> {
    refuse_placeholder(id)?;
    let lifted_at_ms = chrono::Utc::now().timestamp_millis() + service.lift_delay_ms;
    let message = ControlMessage::LiftSuppression {
        tenant: tenant.to_owned(),
        id_hashes: vec![service.hash(tenant, id)],
        lifted_at_ms,
    };
    service.send(tenant, &message).await?;
    Ok(lifted_at_ms)
}

async fn record(writer: &Client, row: &DeletionRow) -> Result<(), ApiError> {
    let mut insert = writer.insert::<DeletionRow>("_deletions").await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}

#[derive(Debug, Row, Deserialize)]
struct CountRow {
    count: u64,
}

/// Deletes the rows of the text tables that quote one of `ids`; returns the rows per table.
async fn clear_text(
    writer: &Client,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<(&'static str, u64)>, ApiError> {
    let quoted = |text: &str| schemas::erasure::quote(text);
    let ask_log = ids
        .iter()
        .map(|id| {
            let id = quoted(id);
            format!(
                "position(question, {id}) > 0 OR position(sql, {id}) > 0 \
                 OR position(detail, {id}) > 0"
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ");
    let dead_letters = ids
        .iter()
        // At an odd (1-based) position: on a byte boundary of the hex text.
        .map(|id| format!("position(payload_hex, '{}') % 2 = 1", hex::encode(id)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut removed = Vec::new();
    for (table, condition) in [
        (
            "ask_log",
            format!("tenant = {} AND ({ask_log})", quoted(tenant)),
        ),
        ("_dead_letters", dead_letters),
    ] {
        let CountRow { count } = writer
            .query(&format!(
                "SELECT count() AS count FROM {table} WHERE {condition}"
            ))
            .fetch_one()
            .await?;
        if count > 0 {
            writer
                .query(&format!("ALTER TABLE {table} DELETE WHERE {condition}"))
                .execute()
                .await?;
            await_mutations(writer, table).await?;
        }
        removed.push((table, count));
    }
    Ok(removed)
}

async fn await_mutations(writer: &Client, table: &str) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + MUTATION_TIMEOUT;
    loop {
        let CountRow { count } = writer
            .query(
                "SELECT count() AS count FROM system.mutations \
                 WHERE database = currentDatabase() AND table = ? AND is_done = 0",
            )
            .bind(table)
            .fetch_one()
            .await?;
        if count == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            tracing::error!(table, "a mutation was not done in time");
            return Err(ApiError::Unavailable);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The request `request_id` of `tenant`, as last recorded.
pub async fn deletion(
    reader: &Client,
    tenant: &str,
    request_id: &str,
) -> Result<Deletion, ApiError> {
    let rows: Vec<DeletionRow> = reader
        .query(
            "SELECT ?fields FROM _deletions WHERE request_id = ? AND tenant = ? \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(request_id)
        .bind(tenant)
        .fetch_all()
        .await?;
    rows.into_iter()
        .next()
        .map(Deletion::from)
        .ok_or(ApiError::NotFound)
}

/// Every request of `tenant`, newest first (the audit trail), with who asked.
pub async fn deletions(reader: &Client, tenant: &str) -> Result<Vec<AuditEntry>, ApiError> {
    let rows: Vec<DeletionRow> = reader
        .query(
            "SELECT ?fields FROM _deletions FINAL WHERE tenant = ? \
             ORDER BY requested_at_ms DESC LIMIT 1000",
        )
        .bind(tenant)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| AuditEntry {
            requester_key_id: row.requester_key_id.clone(),
            deletion: row.into(),
        })
        .collect())
}

/// One request of the audit trail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The request.
    #[serde(flatten)]
    pub deletion: Deletion,
    /// [`key_id`] of the admin key that asked (`command` for `engine remove-tenant`).
    pub requester_key_id: String,
}

/// Everything stored about a person (GDPR Art. 15): their ids, identities, events and
/// sessions as stored (every column), and their traits as the latest `identify` calls left
/// them.
pub async fn export(reader: &Client, tenant: &str, id: &str) -> Result<Value, ApiError> {
    let ids = person_ids(reader, tenant, id).await?;
    let list = ids
        .iter()
        .map(|id| schemas::erasure::quote(id))
        .collect::<Vec<_>>()
        .join(", ");
    let tenant_q = schemas::erasure::quote(tenant);
    let events = json_rows(
        reader,
        &format!(
            "SELECT * FROM events FINAL WHERE tenant = {tenant_q} AND (anonymous_id IN ({list}) \
             OR user_id IN ({list}) OR previous_id IN ({list}) OR person_id IN ({list})) \
             ORDER BY event_time_ms, message_id"
        ),
    )
    .await?;
    let sessions = json_rows(
        reader,
        &format!(
            "SELECT * FROM sessions FINAL WHERE tenant = {tenant_q} AND deleted = 0 \
             AND (visitor_id IN ({list}) OR person_id IN ({list})) ORDER BY start_ms, session_id"
        ),
    )
    .await?;
    let identities = json_rows(
        reader,
        &format!(
            "SELECT id_kind, id, person_id FROM identities FINAL WHERE tenant = {tenant_q} \
             AND deleted = 0 AND (id IN ({list}) OR person_id IN ({list})) ORDER BY id"
        ),
    )
    .await?;
    let mut traits = serde_json::Map::new();
    for event in &events {
        let keys = event.get("traits.key").and_then(Value::as_array);
        let values = event.get("traits.value").and_then(Value::as_array);
        for (key, value) in keys.into_iter().flatten().zip(values.into_iter().flatten()) {
            if let Some(key) = key.as_str() {
                traits.insert(key.to_owned(), value.clone());
            }
        }
    }
    Ok(serde_json::json!({
        "tenant": tenant,
        "ids": ids,
        "identities": identities,
        "traits": traits,
        "events": events,
        "sessions": sessions,
    }))
}

/// Rows as JSON objects; 64-bit integers as numbers on every server (18.16 quotes them by
/// default, 26 does not: `output_format_json_quote_64bit_integers`).
async fn json_rows(reader: &Client, sql: &str) -> Result<Vec<Value>, ApiError> {
    let bytes = reader
        .query(sql)
        .with_setting("output_format_json_quote_64bit_integers", "0")
        .fetch_bytes("JSONEachRow")?
        .collect()
        .await?;
    bytes
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|error| {
                tracing::error!(%error, "ClickHouse sent a row that is not JSON");
                ApiError::Unavailable
            })
        })
        .collect()
}

/// The gateway's erasure service; 503 (`not_configured`) when it has none.
pub fn configured(service: &Option<Arc<ErasureService>>) -> Result<&ErasureService, ApiError> {
    service.as_deref().ok_or(ApiError::NotConfigured(
        "erasure is not configured on this gateway (set --kafka-brokers and --erasure-salt)",
    ))
}
