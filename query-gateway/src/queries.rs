//! The SQL of the endpoints the query model (`crate::query`) does not cover yet: funnel,
//! retention, a person's sessions, progress and stalls. The tenant is always the first bound
//! parameter and comes from the read key, never from the request; values are bound, never
//! spliced. Every query
//! reads final rows (`FINAL` or `argMax(.., version)`, tombstones excluded) and filters on the
//! tables' leading sort key columns `(tenant, time)`, so that it reads only the range's rows.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::params::Range;

fn bound(client: &Client, sql: &str, binds: Vec<String>) -> clickhouse::query::Query {
    binds
        .into_iter()
        .fold(client.query(sql), |query, value| query.bind(value))
}

/// One step of a funnel as the `steps` parameter names it: a page view of a location, or a
/// track event of a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `page:<path or screen name>`.
    Page(String),
    /// `event:<name>`.
    Event(String),
}

/// A session as the person view lists it.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionSummary {
    /// Session id (its first event's message id).
    pub session_id: String,
    /// Visitor id of the first event.
    pub visitor_id: String,
    /// First event, Unix ms.
    pub start_ms: i64,
    /// Last event, Unix ms.
    pub end_ms: i64,
    /// Events.
    pub events: u32,
    /// Page views.
    pub page_views: u32,
    /// Whether it is a bounce (by default: one page view and no other activity).
    pub is_bounce: u8,
    /// First page.
    pub entry_path: String,
    /// Last page.
    pub exit_path: String,
    /// Referrer of the first page.
    pub entry_referrer: String,
    /// Campaign source.
    pub utm_source: String,
}

/// The most recent sessions of a person in the range, newest first.
///
/// `FINAL` would merge every session of the tenant in the range to find a handful; instead
/// the sessions that ever belonged to the person are found first (any version), and only
/// their rows are reduced to the newest version, which must still belong to the person and
/// not be merged away. (Aliases differ from column names: 18.16 would resolve `start_ms`
/// inside `argMax(start_ms, ..)` to the alias.)
pub async fn person_sessions(
    client: &Client,
    tenant: &str,
    person_id: &str,
    range: Range,
    limit: u32,
) -> Result<Vec<SessionSummary>, ApiError> {
    let range_sql = "tenant = ? AND start_time >= toDateTime(?) AND start_time < toDateTime(?)";
    let range_binds = [
        tenant.to_owned(),
        range.from.to_string(),
        range.to.to_string(),
    ];
    let binds = range_binds
        .iter()
        .chain(&range_binds)
        .cloned()
        .chain([person_id.to_owned(), person_id.to_owned()])
        .collect();
    let sql = format!(
        "SELECT session_id, argMax(visitor_id, version) AS latest_visitor_id, argMax(start_ms, version) AS latest_start_ms, \
         argMax(end_ms, version) AS latest_end_ms, argMax(events, version) AS latest_events, \
         argMax(page_views, version) AS latest_page_views, argMax(is_bounce, version) AS latest_is_bounce, \
         argMax(entry_path, version) AS latest_entry_path, argMax(exit_path, version) AS latest_exit_path, \
         argMax(entry_referrer, version) AS latest_entry_referrer, argMax(utm_source, version) AS latest_utm_source \
         FROM sessions WHERE {range_sql} AND session_id IN (SELECT session_id FROM sessions WHERE {range_sql} AND person_id = ?) \
         GROUP BY session_id HAVING argMax(person_id, version) = ? AND argMax(deleted, version) = 0 \
         ORDER BY latest_start_ms DESC, session_id LIMIT {limit}"
    );
    Ok(bound(client, &sql, binds).fetch_all().await?)
}

#[derive(Debug, Row, Deserialize)]
struct FirstEventRow {
    events: u64,
    first: u32,
}

/// When the tenant's first stored event happened, Unix seconds (`None`: no events): where
/// the `all` date range starts.
pub async fn first_event(client: &Client, tenant: &str) -> Result<Option<i64>, ApiError> {
    let row: FirstEventRow = client
        .query("SELECT count() AS events, toUInt32(min(event_time)) AS first FROM events WHERE tenant = ?")
        .bind(tenant)
        .fetch_one()
        .await?;
    Ok((row.events > 0).then_some(i64::from(row.first)))
}

#[derive(Debug, Row, Deserialize)]
struct MarkRow {
    marks: u64,
    cutoff: i64,
}

/// The latest horizon the engine's retention recorded for the tenant (Unix seconds; its
/// raw rows before it are deleted or due to be): `None` before any.
pub async fn retention_mark(client: &Client, tenant: &str) -> Result<Option<i64>, ApiError> {
    let row: MarkRow = client
        .query(schemas::retention::LATEST_MARK_SQL)
        .bind(schemas::retention::MARK)
        .bind(tenant)
        .fetch_one()
        .await?;
    Ok((row.marks > 0).then_some(row.cutoff))
}

#[derive(Debug, Row, Deserialize)]
struct ProgressRow {
    complete_until_ms: i64,
}

/// "Complete up to": every event received before this instant (Unix ms) is in the tables;
/// `None` before the engine has recorded any progress for the tenant.
pub async fn progress(client: &Client, tenant: &str) -> Result<Option<i64>, ApiError> {
    let row: Option<ProgressRow> = client
        .query("SELECT complete_until_ms FROM _progress FINAL WHERE tenant = ?")
        .bind(tenant)
        .fetch_optional()
        .await?;
    Ok(row.map(|row| row.complete_until_ms))
}

/// A partition on which the engine stopped reading: its log is not the one the engine's
/// checkpoints describe (engine `source::log_check`; row of `_log_stalls`).
#[derive(Debug, Clone, Row, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct LogStall {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// `partition_missing`, `log_ends_before_checkpoint`, `log_starts_after_replay` or
    /// `other_record_at_offset`.
    pub reason: String,
    /// The offset the checkpoint expects (-1: none).
    pub expected_offset: i64,
    /// What the log has: its end, its start or the compared offset, by `reason` (-1: none).
    pub found_offset: i64,
    /// When the engine found it, Unix ms.
    pub detected_at_ms: i64,
}

/// The partitions the engine is stalled on (none when it reads normally). The stall is the
/// pipeline's, not a tenant's: every tenant's numbers stop at "complete up to".
/// A database whose engine predates the table has no stalls. Each partition's newest row
/// decides (not `FINAL … WHERE resolved = 0`: ClickHouse before 21.8 may apply that condition
/// before `FINAL` merges, and return a stall a newer row resolved).
pub async fn log_stalls(client: &Client) -> Result<Vec<LogStall>, ApiError> {
    let result = client
        .query(
            "SELECT topic, partition, argMax(reason, detected_at_ms) AS last_reason, \
             argMax(expected_offset, detected_at_ms) AS last_expected, \
             argMax(found_offset, detected_at_ms) AS last_found, \
             max(detected_at_ms) AS last_detected FROM _log_stalls GROUP BY topic, partition \
             HAVING argMax(resolved, detected_at_ms) = 0 ORDER BY topic, partition",
        )
        .fetch_all()
        .await;
    match result {
        Err(clickhouse::error::Error::BadResponse(text))
            if schemas::clickhouse_error::exception_code(&text) == Some(UNKNOWN_TABLE) =>
        {
            Ok(Vec::new())
        }
        other => Ok(other?),
    }
}

/// ClickHouse's error code for a table that does not exist.
const UNKNOWN_TABLE: u32 = 60;

#[derive(Debug, Row, Deserialize)]
struct PersonRow {
    person_id: String,
}

/// The person an id (`userId` or `anonymousId`, exact) belongs to now: the person of the id's
/// newest on-time event. `None` when the tenant never saw the id.
pub async fn person_of(
    client: &Client,
    tenant: &str,
    id: &str,
) -> Result<Option<String>, ApiError> {
    let sql = "SELECT person_id FROM events FINAL WHERE tenant = ? AND (user_id = ? OR anonymous_id = ?) \
               AND late = 0 AND person_id != '' ORDER BY event_time_ms DESC LIMIT 1";
    let rows: Vec<PersonRow> = bound(client, sql, vec![tenant.into(), id.into(), id.into()])
        .fetch_all()
        .await?;
    Ok(rows.into_iter().next().map(|row| row.person_id))
}

#[derive(Debug, Row, Deserialize)]
struct KeyRow {
    key: String,
}

/// The property keys of the tenant's events since `from` (Unix seconds), most used first, at
/// most `limit`.
pub async fn property_keys(
    client: &Client,
    tenant: &str,
    from: i64,
    limit: u32,
) -> Result<Vec<String>, ApiError> {
    let sql = format!(
        "SELECT key FROM (SELECT arrayJoin(properties.key) AS key FROM events \
         WHERE tenant = ? AND event_time >= toDateTime(?) AND late = 0) \
         GROUP BY key ORDER BY count() DESC, key LIMIT {limit}"
    );
    let rows: Vec<KeyRow> = bound(client, &sql, vec![tenant.into(), from.to_string()])
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|row| row.key).collect())
}
