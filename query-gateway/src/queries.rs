//! The SQL behind each endpoint. The tenant is always the first bound parameter and comes
//! from the read key, never from the request; values are bound, never spliced. Every query
//! reads final rows (`FINAL`, tombstones excluded) and filters on the tables' leading sort key
//! columns `(tenant, date)`.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::params::{Filters, Interval, Range};

/// Event-based totals of a range.
#[derive(Debug, Clone, Copy, PartialEq, Row, Serialize, Deserialize)]
pub struct EventTotals {
    /// Distinct visitors (anonymous id, or user id without one) with activity.
    pub visitors: u64,
    /// Distinct persons with activity.
    pub persons: u64,
    /// Page views.
    pub page_views: u64,
    /// Activity events.
    pub events: u64,
}

/// Session-based totals of a range (sessions that started in it).
#[derive(Debug, Clone, Copy, PartialEq, Row, Serialize, Deserialize)]
pub struct SessionTotals {
    /// Sessions.
    pub sessions: u64,
    /// Sessions with one page view.
    pub bounces: u64,
    /// Total duration.
    pub duration_ms: i64,
}

/// One bucket of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Row, Serialize, Deserialize)]
pub struct Point {
    /// Bucket start, Unix seconds.
    pub time: u32,
    /// Value.
    pub value: u64,
}

/// One entry of a top list.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct Entry {
    /// Page path, referrer, source or event name.
    pub key: String,
    /// Count.
    pub value: u64,
}

/// `WHERE` of event queries: tenant, range, on-time activity, filters; with its binds in order.
fn event_conditions(tenant: &str, range: Range, filters: &Filters) -> (String, Vec<String>) {
    let mut sql = String::from(
        "tenant = ? AND event_time >= toDateTime(?) AND event_time < toDateTime(?) AND late = 0 AND type NOT IN ('alias', 'group')",
    );
    let mut binds = vec![
        tenant.to_owned(),
        range.from.to_string(),
        range.to.to_string(),
    ];
    for (column, value) in [
        ("path", &filters.path),
        ("name", &filters.event),
        ("utm_source", &filters.utm_source),
    ] {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            binds.push(value.clone());
        }
    }
    (sql, binds)
}

/// `WHERE` of session queries (sessions started in the range; the campaign filter applies).
fn session_conditions(tenant: &str, range: Range, filters: &Filters) -> (String, Vec<String>) {
    let mut sql = String::from(
        "tenant = ? AND deleted = 0 AND start_time >= toDateTime(?) AND start_time < toDateTime(?)",
    );
    let mut binds = vec![
        tenant.to_owned(),
        range.from.to_string(),
        range.to.to_string(),
    ];
    if let Some(source) = &filters.utm_source {
        sql.push_str(" AND utm_source = ?");
        binds.push(source.clone());
    }
    (sql, binds)
}

fn bound(client: &Client, sql: &str, binds: Vec<String>) -> clickhouse::query::Query {
    binds
        .into_iter()
        .fold(client.query(sql), |query, value| query.bind(value))
}

/// Visitors, persons, page views and events of a range.
pub async fn event_totals(
    client: &Client,
    tenant: &str,
    range: Range,
    filters: &Filters,
) -> Result<EventTotals, ApiError> {
    let (conditions, binds) = event_conditions(tenant, range, filters);
    let sql = format!(
        "SELECT uniqExact(if(anonymous_id != '', anonymous_id, user_id)) AS visitors, uniqExact(person_id) AS persons, \
         countIf(type = 'page') AS page_views, count() AS events FROM events FINAL WHERE {conditions}"
    );
    Ok(bound(client, &sql, binds).fetch_one().await?)
}

/// Sessions, bounces and duration of the sessions that started in a range.
pub async fn session_totals(
    client: &Client,
    tenant: &str,
    range: Range,
    filters: &Filters,
) -> Result<SessionTotals, ApiError> {
    let (conditions, binds) = session_conditions(tenant, range, filters);
    let sql = format!(
        "SELECT count() AS sessions, sum(toUInt64(is_bounce)) AS bounces, sum(duration_ms) AS duration_ms \
         FROM sessions FINAL WHERE {conditions}"
    );
    Ok(bound(client, &sql, binds).fetch_one().await?)
}

/// A metric per bucket (`page_views`, `events`, `visitors` or `sessions`).
pub async fn time_series(
    client: &Client,
    tenant: &str,
    range: Range,
    interval: Interval,
    metric: &str,
    filters: &Filters,
) -> Result<Vec<Point>, ApiError> {
    let bucket = interval.function();
    let (sql, binds) = if metric == "sessions" {
        let (conditions, binds) = session_conditions(tenant, range, filters);
        (
            format!(
                "SELECT toUInt32({bucket}(start_time)) AS time, count() AS value FROM sessions FINAL WHERE {conditions} GROUP BY time ORDER BY time"
            ),
            binds,
        )
    } else {
        let value = match metric {
            "page_views" => "countIf(type = 'page')",
            "visitors" => "uniqExact(if(anonymous_id != '', anonymous_id, user_id))",
            _ => "count()",
        };
        let (conditions, binds) = event_conditions(tenant, range, filters);
        (
            format!(
                "SELECT toUInt32({bucket}(event_time)) AS time, {value} AS value FROM events FINAL WHERE {conditions} GROUP BY time ORDER BY time"
            ),
            binds,
        )
    };
    Ok(bound(client, &sql, binds).fetch_all().await?)
}

/// The most frequent pages, referrers, campaign sources or event names.
pub async fn top(
    client: &Client,
    tenant: &str,
    range: Range,
    kind: &str,
    limit: u32,
    filters: &Filters,
) -> Result<Vec<Entry>, ApiError> {
    // `limit` is a validated integer (1 to 1000), so it is part of the SQL, not a bound string.
    let (sql, binds) = match kind {
        "pages" | "events" => {
            let (conditions, binds) = event_conditions(tenant, range, filters);
            let (key, only) = if kind == "pages" {
                ("path", "page")
            } else {
                ("name", "track")
            };
            (
                format!(
                    "SELECT {key} AS key, count() AS value FROM events FINAL WHERE {conditions} AND type = '{only}' GROUP BY key ORDER BY value DESC, key LIMIT {limit}"
                ),
                binds,
            )
        }
        _ => {
            let (conditions, binds) = session_conditions(tenant, range, filters);
            let key = if kind == "referrers" {
                "entry_referrer"
            } else {
                "utm_source"
            };
            (
                format!(
                    "SELECT {key} AS key, count() AS value FROM sessions FINAL WHERE {conditions} AND {key} != '' GROUP BY key ORDER BY value DESC, key LIMIT {limit}"
                ),
                binds,
            )
        }
    };
    Ok(bound(client, &sql, binds).fetch_all().await?)
}
