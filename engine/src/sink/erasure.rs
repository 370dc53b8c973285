//! The erasure executor: deletes an erased person's (or a removed tenant's) stored rows once
//! the dataflow has stopped writing them, and records the completion in `_deletions`.
//!
//! Process 0 runs it on the I/O runtime. Its worker 0 reads the control topic and hands over
//! each request with the epoch at which the dataflow applied it ([`Requests`]); from that epoch
//! on, the `erase` operator keeps the person's events out of every sink. Once every sink has
//! written that epoch, each table's rows of the person go with one `ALTER TABLE … DELETE`
//! mutation, awaited: a row written before the barrier is in a part the mutation covers, and
//! none is written after it. The predicates match the salted hashes of the id columns
//! ([`schemas::erasure::id_hash_sql`]): the executor never sees an id.
//!
//! A restart re-reads the control topic whole, so a request whose completion was not recorded
//! runs again (the mutations are idempotent); a completed one is skipped.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use schemas::ControlMessage;
use schemas::erasure::{id_hash_sql, quote};
use serde::{Deserialize, Serialize};

use super::clickhouse::{CountRow, SinkError, await_mutations, client};
use super::rollups::PersonRows;
use crate::config::{ClickHouseConfig, ErasureConfig};
use crate::metrics::Metrics;

/// The tables that hold a person's ids, with the columns that hold them. `ingestion_warnings`
/// is also cleared of the warnings about the person's events (by message id), so it comes
/// before `events`.
pub const PERSON_TABLES: &[(&str, &[&str])] = &[
    ("ingestion_warnings", &["value"]),
    (
        "events",
        &["anonymous_id", "user_id", "previous_id", "person_id"],
    ),
    ("sessions", &["visitor_id", "person_id"]),
    ("identities", &["id", "person_id"]),
    ("identity_claims", &["from_id", "user_id"]),
    ("agg_hour_visitors", &["visitor_id", "person_id"]),
];

/// The tables a tenant's removal clears (every table with a `tenant` column but the audit
/// table `_deletions`, which keeps the record of the removal).
pub const TENANT_TABLES: &[&str] = &[
    "ingestion_warnings",
    "events",
    "sessions",
    "identities",
    "identity_claims",
    "agg_minute_metrics",
    "agg_hour_visitors",
    "live_counters",
    "_progress",
    "ask_log",
    "_retention",
];

/// A request to carry out: a person's erasure or a tenant's removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id (the `_deletions` key).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// The person's salted id hashes; `None` for a tenant's removal.
    pub id_hashes: Option<Vec<String>>,
    /// Unix ms.
    pub requested_at_ms: i64,
    /// The salt fingerprint the request's hashes were made with (empty: not recorded).
    pub salt_check: String,
}

impl Request {
    /// The request a control record makes, if it makes one (lifts and unmerges do not).
    pub fn of(message: &ControlMessage) -> Option<Request> {
        match message {
            ControlMessage::Erase {
                request_id,
                tenant,
                id_hashes,
                requested_at_ms,
                salt_check,
            } => Some(Request {
                id: request_id.clone(),
                tenant: tenant.clone(),
                id_hashes: Some(id_hashes.clone()),
                requested_at_ms: *requested_at_ms,
                salt_check: salt_check.clone(),
            }),
            ControlMessage::RemoveTenant {
                request_id,
                tenant,
                requested_at_ms,
            } => Some(Request {
                id: request_id.clone(),
                tenant: tenant.clone(),
                id_hashes: None,
                requested_at_ms: *requested_at_ms,
                salt_check: String::new(),
            }),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        if self.id_hashes.is_some() {
            "person"
        } else {
            "tenant"
        }
    }
}

/// Requests the dataflow applied, by request id, with the epoch it applied each at. Shared by
/// the control source (worker 0 of process 0) and the executor.
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, (Request, u64)>>>);

impl Requests {
    /// Notes that the dataflow applies `message` at `epoch` (lifts are not requests).
    pub fn applied(&self, message: &ControlMessage, epoch: u64) {
        let Some(request) = Request::of(message) else {
            return;
        };
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(request.id.clone())
            .or_insert((request, epoch));
    }

    fn snapshot(&self) -> Vec<(Request, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// One row of `_deletions`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct DeletionRow {
    /// The request's id.
    pub request_id: String,
    /// Tenant.
    pub tenant: String,
    /// `person` or `tenant`.
    pub kind: String,
    /// The salted hashes of the person's ids (none for a tenant).
    pub id_hashes: Vec<String>,
    /// A prefix of the SHA-256 of the key that asked (`command` for the operator command).
    pub requester_key_id: String,
    /// Unix ms.
    pub requested_at_ms: i64,
    /// `pending`, `completed`, or `failed` (the gateway could not write the control record).
    pub status: String,
    /// Unix ms; 0 while pending.
    pub completed_at_ms: i64,
    /// The tables rows were removed from.
    pub removed_tables: Vec<String>,
    /// The rows removed from each of `removed_tables` (for `agg_minute_metrics`, the
    /// rollup rows recomputed without the person).
    pub removed_rows: Vec<u64>,
    /// Higher replaces lower (Unix ms of the write).
    pub version: u64,
}

/// Why a request could not be carried out this time (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// ClickHouse refused or was unreachable.
    #[error("deleting in ClickHouse")]
    ClickHouse(#[from] SinkError),
    /// The request's hashes were made with another salt than this engine's: nothing would
    /// match, so the request stays pending (and the deadline alert fires).
    #[error(
        "request hashed with another salt (fingerprint {request}, this engine's {engine}): set erasure.salt to the query gateway's --erasure-salt"
    )]
    SaltMismatch {
        /// The request's fingerprint.
        request: String,
        /// This engine's.
        engine: String,
    },
    /// A mutation was not done in time.
    #[error("the mutation on {table} was not done after {timeout:?}")]
    MutationTimeout {
        /// The table.
        table: &'static str,
        /// How long it was awaited.
        timeout: Duration,
    },
}

/// Why `engine --remove-tenant` failed.
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    /// Not a tenant id (letters, digits and underscores).
    #[error("{0:?} is not a tenant id (letters, digits and underscores)")]
    BadTenant(String),
    /// The control record could not be encoded.
    #[error("encoding the control record")]
    Encode(#[from] serde_json::Error),
    /// ClickHouse refused or was unreachable.
    #[error("recording the request in ClickHouse")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// The control record could not be written.
    #[error("writing the control record")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The running engine did not complete the request in time.
    #[error(
        "the running engine did not complete request {request_id} within {timeout:?} (is it running? see _deletions)"
    )]
    NotCompleted {
        /// The request.
        request_id: String,
        /// How long it was awaited.
        timeout: Duration,
    },
}

/// `engine --remove-tenant`: records the request, writes the control record (the running
/// engine drops the tenant's events from then on and in every replay, then deletes its rows),
/// and waits for the completion row.
pub async fn remove_tenant(
    config: &crate::config::EngineConfig,
    tenant: &str,
) -> Result<DeletionRow, RemovalError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    if !schemas::ddl::is_valid_identifier(tenant) {
        return Err(RemovalError::BadTenant(tenant.to_owned()));
    }
    let client = client(&config.clickhouse).with_database(&config.clickhouse.database);
    let now = crate::now_ms() as i64;
    let row = DeletionRow {
        request_id: format!("tenant-{tenant}-{now}"),
        tenant: tenant.to_owned(),
        kind: "tenant".into(),
        id_hashes: Vec::new(),
        requester_key_id: "command".into(),
        requested_at_ms: now,
        status: "pending".into(),
        completed_at_ms: 0,
        removed_tables: Vec::new(),
        removed_rows: Vec::new(),
        version: 1,
    };
    let mut insert = client.insert::<DeletionRow>("_deletions").await?;
    insert.write(&row).await?;
    insert.end().await?;
    let message = ControlMessage::RemoveTenant {
        request_id: row.request_id.clone(),
        tenant: tenant.to_owned(),
        requested_at_ms: now,
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("acks", "all")
        .create()?;
    let payload = serde_json::to_vec(&message)?;
    producer
        .send(
            FutureRecord::to(&config.kafka.control_topic)
                .key(tenant)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)?;
    let timeout = Duration::from_secs(config.erasure.mutation_timeout_secs);
    let deadline = Instant::now() + timeout;
    // The removal goes ahead whatever Redis says: its keys expire or are rebuilt.
    let redis_keys = match forget_in_redis(&config.live.redis_url, tenant).await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(error = %crate::retry::Chain(&error), tenant, "cannot delete the tenant's Redis keys; delete clickstream:*:{tenant}* by hand");
            0
        }
    };
    while Instant::now() < deadline {
        let latest: Option<DeletionRow> = client
            .query(
                "SELECT ?fields FROM _deletions WHERE request_id = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(&row.request_id)
            .fetch_optional()
            .await?;
        if let Some(mut done) = latest.filter(|latest| latest.status == "completed") {
            done.removed_tables.push("redis".into());
            done.removed_rows.push(redis_keys);
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(RemovalError::NotCompleted {
        request_id: row.request_id,
        timeout,
    })
}

/// The Redis key prefixes of a tenant's data: the ingest gateway's rate-limit bucket and the
/// query gateway's Ask translations (the gateways' default prefixes).
pub const TENANT_REDIS_PATTERNS: &[&str] = &[
    "clickstream:ratelimit:{tenant}",
    "clickstream:ask:translation:v1:{tenant}:*",
];

/// Deletes the tenant's keys from the Redis at `url` (none configured: nothing); returns how
/// many.
async fn forget_in_redis(url: &str, tenant: &str) -> Result<u64, redis::RedisError> {
    if url.is_empty() {
        return Ok(0);
    }
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut deleted = 0;
    for pattern in TENANT_REDIS_PATTERNS {
        let pattern = pattern.replace("{tenant}", tenant);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(&mut connection)
                .await?;
        }
    }
    Ok(deleted)
}

impl From<clickhouse::error::Error> for ErasureError {
    fn from(error: clickhouse::error::Error) -> Self {
        ErasureError::ClickHouse(SinkError::ClickHouse(error))
    }
}

/// Carries out requests forever. `sinks_frontier` is the first epoch not yet written by every
/// sink (the checkpoint operator's input frontier); `retention` is the operators' (what the
/// dataflow withdraws itself, and what the executor recounts).
pub async fn run(
    clickhouse: ClickHouseConfig,
    erasure: ErasureConfig,
    retention: operators::Retention,
    requests: Requests,
    sinks_frontier: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let client = client(&clickhouse).with_database(&clickhouse.database);
    // Requests completed by earlier runs are read again from the topic at every start: they
    // are neither pending nor completed anew.
    let mut completed: HashSet<String> = loop {
        match super::clickhouse::completed_erasures(&client).await {
            Ok(completed) => break completed,
            Err(error) => {
                tracing::warn!(error = %crate::retry::Chain(&error), "cannot read _deletions; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut interval = tokio::time::interval(Duration::from_millis(erasure.poll_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let pending: Vec<_> = requests
            .snapshot()
            .into_iter()
            .filter(|(request, _)| !completed.contains(&request.id))
            .collect();
        report_pending(&metrics, &pending);
        for (request, epoch) in pending {
            if sinks_frontier.load(Ordering::Acquire) <= epoch {
                continue;
            }
            let started = Instant::now();
            let id = request.id.clone();
            let recount_before_ms = retention.surely_retained_from(crate::now_ms() as i64);
            let applied = Applied {
                epoch,
                recount_before_ms,
            };
            match carry_out(&client, &clickhouse.database, &erasure, &request, applied).await {
                Ok(row) => {
                    completed.insert(id.clone());
                    metrics.erasures_completed.inc();
                    tracing::info!(request_id = %id, tenant = %row.tenant, kind = %row.kind, tables = ?row.removed_tables, rows = ?row.removed_rows, took_ms = started.elapsed().as_millis() as u64, "erasure completed");
                }
                Err(error) => {
                    metrics.erasure_failures.inc();
                    tracing::warn!(request_id = %id, error = %crate::retry::Chain(&error), "erasure not carried out; retrying");
                }
            }
        }
    }
}

fn report_pending(metrics: &Metrics, pending: &[(Request, u64)]) {
    let now = crate::now_ms() as i64;
    let oldest = pending
        .iter()
        .map(|(request, _)| request.requested_at_ms)
        .min();
    metrics.erasures_pending.set(pending.len() as i64);
    metrics
        .erasure_oldest_pending_seconds
        .set(oldest.map_or(0, |at| (now - at).max(0) / 1000));
}

/// Where the dataflow stands on a request.
#[derive(Debug, Clone, Copy)]
struct Applied {
    /// The epoch at which it applied the request.
    epoch: u64,
    /// Event time (Unix ms) before which the dataflow may have released a person's events
    /// when it applied it.
    recount_before_ms: i64,
}

/// Deletes what `request` covers (unless an earlier run did and recorded it), having first
/// recounted the rollups of the minutes a person touched that the dataflow may have released
/// ([`super::rollups`], at the version of the epoch that applied the request), and records
/// the completion; returns the completion row.
async fn carry_out(
    client: &Client,
    database: &str,
    erasure: &ErasureConfig,
    request: &Request,
    applied: Applied,
) -> Result<DeletionRow, ErasureError> {
    let recorded = recorded(client, &request.id).await?;
    if let Some(row) = recorded.as_ref().filter(|row| row.status == "completed") {
        return Ok(row.clone());
    }
    let engine = schemas::erasure::salt_check(&erasure.salt);
    if !request.salt_check.is_empty() && request.salt_check != engine {
        return Err(ErasureError::SaltMismatch {
            request: request.salt_check.clone(),
            engine,
        });
    }
    let timeout = Duration::from_secs(erasure.mutation_timeout_secs);
    let deletions = match &request.id_hashes {
        Some(hashes) if hashes.is_empty() => Vec::new(),
        Some(hashes) => person_deletions(database, &erasure.salt, &request.tenant, hashes),
        None => TENANT_TABLES
            .iter()
            .map(|table| (*table, String::new()))
            .collect(),
    };
    let mut removed = Vec::new();
    let condition = |name: &str| {
        deletions
            .iter()
            .find(|(table, _)| *table == name)
            .map(|(_, condition)| condition.as_str())
    };
    if let (Some(events), Some(sessions), Some(_)) = (
        condition("events"),
        condition("sessions"),
        &request.id_hashes,
    ) {
        let person = PersonRows { events, sessions };
        let Applied {
            epoch,
            recount_before_ms,
        } = applied;
        let rewritten =
            super::rollups::recompute(client, &request.tenant, person, recount_before_ms, epoch)
                .await?;
        removed.push(("agg_minute_metrics".to_owned(), rewritten));
    }
    for (table, condition) in deletions {
        let rows = delete(client, table, &request.tenant, &condition, timeout).await?;
        removed.push((table.to_owned(), rows));
    }
    let mut row = recorded.unwrap_or_else(|| DeletionRow {
        request_id: request.id.clone(),
        tenant: request.tenant.clone(),
        kind: request.kind().to_owned(),
        id_hashes: request.id_hashes.clone().unwrap_or_default(),
        requester_key_id: String::new(),
        requested_at_ms: request.requested_at_ms,
        status: String::new(),
        completed_at_ms: 0,
        removed_tables: Vec::new(),
        removed_rows: Vec::new(),
        version: 0,
    });
    for (table, rows) in removed {
        row.removed_tables.push(table);
        row.removed_rows.push(rows);
    }
    let now = crate::now_ms();
    row.status = "completed".into();
    row.completed_at_ms = now as i64;
    row.version = now.max(row.version + 1);
    let mut insert = client.insert::<DeletionRow>("_deletions").await?;
    insert.write(&row).await?;
    insert.end().await?;
    Ok(row)
}

/// Each person table with the condition that finds the person's rows in it.
fn person_deletions(
    database: &str,
    salt: &str,
    tenant: &str,
    hashes: &[String],
) -> Vec<(&'static str, String)> {
    let salt = quote(salt);
    let list = hashes
        .iter()
        .map(|hash| quote(hash))
        .collect::<Vec<_>>()
        .join(", ");
    let any_of = |columns: &[&str]| {
        columns
            .iter()
            .map(|column| format!("{} IN ({list})", id_hash_sql(&salt, column)))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    PERSON_TABLES
        .iter()
        .map(|(table, columns)| {
            let mut condition = any_of(columns);
            if *table == "ingestion_warnings" {
                condition = format!(
                    "{condition} OR message_id IN (SELECT message_id FROM {database}.events \
                     WHERE tenant = {} AND ({}))",
                    quote(tenant),
                    any_of(PERSON_TABLES[1].1)
                );
            }
            (*table, condition)
        })
        .collect()
}

/// Deletes the rows of `tenant` in `table` matching `condition` (all of the tenant's when
/// empty), awaits the mutation, and returns how many rows it removed.
async fn delete(
    client: &Client,
    table: &'static str,
    tenant: &str,
    condition: &str,
    timeout: Duration,
) -> Result<u64, ErasureError> {
    let filter = if condition.is_empty() {
        format!("tenant = {}", quote(tenant))
    } else {
        format!("tenant = {} AND ({condition})", quote(tenant))
    };
    let CountRow { count } = client
        .query(&format!(
            "SELECT count() AS count FROM {table} WHERE {filter}"
        ))
        .fetch_one()
        .await?;
    if count == 0 {
        return Ok(0);
    }
    client
        .query(&format!("ALTER TABLE {table} DELETE WHERE {filter}"))
        .execute()
        .await?;
    tokio::time::timeout(timeout, await_mutations(client, table))
        .await
        .map_err(|_| ErasureError::MutationTimeout { table, timeout })??;
    Ok(count)
}

/// The request's latest `_deletions` row, if the query gateway or an earlier run wrote one.
async fn recorded(client: &Client, request_id: &str) -> Result<Option<DeletionRow>, ErasureError> {
    Ok(client
        .query(
            "SELECT ?fields FROM _deletions WHERE request_id = ? \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(request_id)
        .fetch_optional::<DeletionRow>()
        .await?)
}
