//! Erasure in the engine: the requests the control topic carries, their audit rows, the
//! executor that carries them out ([`executor`]) and the operator command that removes a
//! tenant ([`removal`]).
//!
//! The executor deletes an erased person's (or a removed tenant's) stored rows once the
//! dataflow has stopped writing them, and records the completion in `_deletions`. Process 0
//! runs it on the I/O runtime. Its worker 0 reads the control topic and hands over
//! each request with the epoch at which the dataflow applied it ([`Requests`]); from that epoch
//! on, the `erase` operator keeps the person's events out of every sink. Once every sink has
//! written that epoch, each table's rows of the person go with one `ALTER TABLE … DELETE`
//! mutation, awaited: a row written before the barrier is in a part the mutation covers, and
//! none is written after it. The predicates match the salted hashes of the id columns
//! ([`schemas::erasure::id_hash_sql`]): the executor never sees an id.
//!
//! A restart re-reads the control topic whole, so a request whose completion was not recorded
//! runs again (the mutations are idempotent); a completed one is skipped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickhouse::Row;
use schemas::ControlMessage;
use serde::{Deserialize, Serialize};

use crate::clickhouse::SinkError;

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

/// What a request asks the executor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duty {
    /// Erase the person with these salted id hashes.
    Person(Vec<String>),
    /// Remove the whole tenant.
    Tenant,
    /// Recount the per-minute rollups of these minutes (Unix s) from the stored rows, once
    /// `due_ms` (Unix ms) has passed: an erasure's second half ([`ControlMessage::RecountRollups`]).
    Rollups {
        /// Minute starts, Unix s.
        minutes: Vec<u32>,
        /// Unix ms.
        due_ms: i64,
    },
}

/// A request to carry out: a person's erasure, a tenant's removal, or the rollup recount that
/// completes an erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id (the `_deletions` key).
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// What to do.
    pub duty: Duty,
    /// Unix ms; for a recount, when it is due.
    pub requested_at_ms: i64,
    /// The salt fingerprint the request's hashes were made with (empty: not recorded).
    pub salt_check: String,
}

impl Request {
    /// The request a control record makes, if it makes one (lifts and unmerges do not).
    pub fn of(message: &ControlMessage) -> Option<Request> {
        let request = |id: &String, tenant: &String, duty, at_ms: i64, salt_check: &str| Request {
            id: id.clone(),
            tenant: tenant.clone(),
            duty,
            requested_at_ms: at_ms,
            salt_check: salt_check.to_owned(),
        };
        match message {
            ControlMessage::Erase {
                request_id,
                tenant,
                id_hashes,
                requested_at_ms,
                salt_check,
            } => Some(request(
                request_id,
                tenant,
                Duty::Person(id_hashes.clone()),
                *requested_at_ms,
                salt_check,
            )),
            ControlMessage::RemoveTenant {
                request_id,
                tenant,
                requested_at_ms,
            } => Some(request(
                request_id,
                tenant,
                Duty::Tenant,
                *requested_at_ms,
                "",
            )),
            ControlMessage::RecountRollups {
                request_id,
                tenant,
                minutes,
                due_ms,
            } => Some(request(
                request_id,
                tenant,
                Duty::Rollups {
                    minutes: minutes.clone(),
                    due_ms: *due_ms,
                },
                *due_ms,
                "",
            )),
            ControlMessage::Unmerge { .. }
            | ControlMessage::Remerge { .. }
            | ControlMessage::LiftSuppression { .. } => None,
        }
    }

    /// Its `_deletions.kind`.
    pub fn kind(&self) -> &'static str {
        match self.duty {
            Duty::Person(_) => "person",
            Duty::Tenant => "tenant",
            Duty::Rollups { .. } => "rollups",
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

    /// Every request applied so far, with its epoch.
    pub fn snapshot(&self) -> Vec<(Request, u64)> {
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
    /// `person`, `tenant`, or `rollups` (an erasure's second recount, `{request}:rollups`).
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
    /// The second recount's record could not be encoded.
    #[error("encoding the rollup recount's control record")]
    Encode(#[source] serde_json::Error),
    /// The second recount's record could not be written to the control topic.
    #[error("writing the rollup recount's control record")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// A mutation was not done in time.
    #[error("the mutation on {table} was not done after {timeout:?}")]
    MutationTimeout {
        /// The table.
        table: &'static str,
        /// How long it was awaited.
        timeout: Duration,
    },
}

impl From<clickhouse::error::Error> for ErasureError {
    fn from(error: clickhouse::error::Error) -> Self {
        ErasureError::ClickHouse(SinkError::ClickHouse(error))
    }
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

/// Tenants removed so far, shared by a process's workers.
#[derive(Debug, Clone, Default)]
pub struct RemovedTenants(Arc<std::sync::RwLock<std::collections::HashSet<String>>>);

impl RemovedTenants {
    /// Notes a removal.
    pub fn insert(&self, tenant: &str) {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(tenant.to_owned());
    }

    /// Whether `tenant` was removed.
    pub fn contains(&self, tenant: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(tenant)
    }
}

pub mod executor;
pub mod removal;

pub use executor::run;
pub use removal::remove_tenant;
