//! Recounting the per-minute rollups (`agg_minute_metrics`) of the minutes an erased person
//! touched, from the stored rows of everyone else.
//!
//! The dataflow withdraws an erased person from a minute only while `assign_persons` still
//! holds their events there: from [`operators::Retention::surely_retained_from`] on (the
//! session gap plus the lateness horizon before now, 72 h 30 min by default). The person's
//! contribution to an older minute is already written, so the executor counts each such minute
//! again from the raw rows (`events`, `sessions`) without the person, with the dataflow's own
//! counting ([`operators::minute_rollups`]), and writes the values that changed at the version
//! of the epoch at which the dataflow applied the erasure: above everything the dataflow wrote
//! before it.
//!
//! A minute whose window the dataflow still holds (younger than
//! [`operators::SessionSettings::window_keep_ms`], about 97 h) still counts the person in its
//! window, and a later change of the minute (another session starting in it that grows)
//! writes it again, person included. So the executor recounts such minutes a second time once
//! the window has let them go, from a `recount_rollups` record it writes to the control topic
//! before the person's rows are deleted (a restart forgets nothing); that recount needs no
//! person, whose rows are gone by then, and writes above every version the dataflow wrote.
//!
//! Minutes whose raw rows the tenant's retention has deleted, or may be deleting (before its
//! latest retention mark plus [`RETENTION_MARGIN_SECS`]), are left alone: their rollups are
//! all that is left, and they hold no id.

use operators::ArcStr;
use std::collections::{BTreeMap, BTreeSet};

use clickhouse::{Client, Row};
use operators::{AggRow, Interner, minute_rollups};
use schemas::erasure::quote;
use schemas::{Event, EventKind};
use serde::Deserialize;

use super::tables::aggregates::AggMinuteRow;

/// Before a tenant's latest retention mark plus this, a minute's raw rows may be partly
/// deleted (TTL merges and the scheduled mutations lag the mark by up to a day), so its
/// rollups cannot be recounted from them.
pub const RETENTION_MARGIN_SECS: i64 = 2 * 86_400;

/// The minutes recounted at once (one read of each table per chunk): a busy tenant's minute
/// can hold a few hundred thousand events.
const MINUTES_PER_READ: usize = 5;

#[derive(Debug, Row, Deserialize)]
struct MinuteRow {
    minute: u32,
}

/// What the rollups read of stored events: one row per distinct combination, with how many
/// events share it.
#[derive(Debug, Row, Deserialize)]
struct StoredEvent {
    minute: u32,
    copies: u64,
    kind: String,
    name: String,
    path: String,
    anonymous_id: String,
    user_id: String,
    person_id: String,
    is_bot: u8,
    non_interactive: u8,
}

/// What the rollups read of a stored session.
#[derive(Debug, Row, Deserialize)]
struct StoredSession {
    minute: u32,
    start_ms: i64,
    end_ms: i64,
    is_bounce: u8,
}

#[derive(Debug, Row, Deserialize)]
struct StoredRollup {
    minute: u32,
    metric: String,
    dimension: String,
    value: i64,
}

#[derive(Debug, Row, Deserialize)]
struct MarkRow {
    marks: u64,
    cutoff: i64,
}

/// Which rows are the erased person's: SQL conditions over `events` and over `sessions` (the
/// executor's hash predicates).
#[derive(Debug, Clone, Copy)]
pub struct PersonRows<'a> {
    /// Over `events`.
    pub events: &'a str,
    /// Over `sessions`.
    pub sessions: &'a str,
}

/// Recounts `minutes` (Unix s) of `tenant` from the stored rows of everyone but `person`
/// (everyone, when `None`) and writes the values that changed at `version`; returns how many
/// rollup rows it wrote. Idempotent.
pub async fn recount(
    client: &Client,
    tenant: &str,
    minutes: &[u32],
    person: Option<PersonRows<'_>>,
    version: u64,
) -> Result<u64, clickhouse::error::Error> {
    let mut written = 0;
    for chunk in minutes.chunks(MINUTES_PER_READ) {
        let recounted = recount_chunk(client, tenant, chunk, person).await?;
        let stored = stored_rollups(client, tenant, chunk).await?;
        let changed = changes(tenant, &stored, &recounted, version);
        if changed.is_empty() {
            continue;
        }
        let mut insert = client.insert::<AggMinuteRow>("agg_minute_metrics").await?;
        for row in &changed {
            insert.write(row).await?;
        }
        insert.end().await?;
        written += changed.len() as u64;
    }
    Ok(written)
}

/// The minutes (Unix s) of the person's non-late events and session starts that began before
/// `before_ms` (Unix ms), after the tenant's retention horizon, in order. Must run before the
/// person's rows are deleted: they are how the minutes are found.
pub async fn touched_minutes(
    client: &Client,
    tenant: &str,
    person: PersonRows<'_>,
    before_ms: i64,
) -> Result<Vec<u32>, clickhouse::error::Error> {
    let tenant_sql = quote(tenant);
    let rows: Vec<MinuteRow> = client
        .query(&format!(
            "SELECT DISTINCT toUInt32(toStartOfMinute(event_time)) AS minute FROM events \
             WHERE tenant = {tenant_sql} AND late = 0 AND ({events}) \
             UNION ALL \
             SELECT DISTINCT toUInt32(toStartOfMinute(start_time)) AS minute FROM sessions \
             WHERE tenant = {tenant_sql} AND ({sessions})",
            events = person.events,
            sessions = person.sessions,
        ))
        .fetch_all()
        .await?;
    let minutes: Vec<u32> = rows
        .into_iter()
        .map(|row| row.minute)
        .filter(|minute| i64::from(*minute) * 1000 < before_ms)
        .collect();
    after_retention(client, tenant, minutes).await
}

/// `minutes` without those before the tenant's latest retention mark plus
/// [`RETENTION_MARGIN_SECS`], sorted and without repeats.
pub async fn after_retention(
    client: &Client,
    tenant: &str,
    minutes: Vec<u32>,
) -> Result<Vec<u32>, clickhouse::error::Error> {
    let mark: MarkRow = client
        .query(schemas::retention::LATEST_MARK_SQL)
        .bind(schemas::retention::MARK)
        .bind(tenant)
        .fetch_one()
        .await?;
    let first_whole = (mark.marks > 0).then_some(mark.cutoff + RETENTION_MARGIN_SECS);
    let minutes: BTreeSet<u32> = minutes
        .into_iter()
        .filter(|minute| first_whole.is_none_or(|first| i64::from(*minute) >= first))
        .collect();
    Ok(minutes.into_iter().collect())
}

/// `minutes` of `tenant` counted again from everyone's rows but the person's.
async fn recount_chunk(
    client: &Client,
    tenant: &str,
    minutes: &[u32],
    person: Option<PersonRows<'_>>,
) -> Result<BTreeMap<u32, Vec<AggRow>>, clickhouse::error::Error> {
    let tenant_sql = quote(tenant);
    let (in_events, in_sessions) = (
        in_minutes("event_time", minutes),
        in_minutes("start_time", minutes),
    );
    let (not_events, not_sessions) = match person {
        Some(person) => (
            format!("AND NOT ({})", person.events),
            format!("AND NOT ({})", person.sessions),
        ),
        None => (String::new(), String::new()),
    };
    let events: Vec<StoredEvent> = client
        .query(&format!(
            "SELECT minute, count() AS copies, kind, name, path, anonymous_id, user_id, person_id, \
             is_bot, non_interactive FROM (SELECT toUInt32(toStartOfMinute(event_time)) AS minute, \
             type AS kind, name, path, anonymous_id, user_id, person_id, is_bot, non_interactive \
             FROM events FINAL WHERE tenant = {tenant_sql} \
             AND ({in_events}) AND late = 0 \
             {not_events}) \
             GROUP BY minute, kind, name, path, anonymous_id, user_id, person_id, is_bot, \
             non_interactive"
        ))
        .fetch_all()
        .await?;
    let sessions: Vec<StoredSession> = client
        .query(&format!(
            "SELECT toUInt32(toStartOfMinute(start_time)) AS minute, start_ms, end_ms, is_bounce \
             FROM sessions FINAL WHERE tenant = {tenant_sql} \
             AND ({in_sessions}) AND deleted = 0 \
             {not_sessions}"
        ))
        .fetch_all()
        .await?;
    Ok(count_minutes(tenant, minutes, &events, &sessions))
}

/// `minutes` as a condition on the DateTime key column `column`: one range per minute, which
/// ClickHouse's primary-key analysis reads (an `IN` over a function of the column it may not).
fn in_minutes(column: &str, minutes: &[u32]) -> String {
    minutes
        .iter()
        .map(|minute| {
            format!(
                "({column} >= toDateTime({minute}) AND {column} < toDateTime({}))",
                u64::from(*minute) + 60
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Each minute's rollups, counted by the dataflow's rules from the stored rows.
fn count_minutes(
    tenant: &str,
    minutes: &[u32],
    events: &[StoredEvent],
    sessions: &[StoredSession],
) -> BTreeMap<u32, Vec<AggRow>> {
    let mut interner = Interner::default();
    let mut activities: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for stored in events {
        let Some(kind) = EventKind::parse(&stored.kind) else {
            continue;
        };
        let mut event = Event::new(tenant, "", kind, i64::from(stored.minute) * 1000);
        event.name.clone_from(&stored.name);
        event.page.path.clone_from(&stored.path);
        event.anonymous_id.clone_from(&stored.anonymous_id);
        event.user_id.clone_from(&stored.user_id);
        event.is_bot = stored.is_bot != 0;
        event.non_interactive = stored.non_interactive != 0;
        let activity = operators::Activity::of(&event, &mut interner);
        let person: ArcStr = interner.intern(&stored.person_id);
        activities.entry(stored.minute).or_default().push((
            activity,
            person,
            stored.copies as usize,
        ));
    }
    let mut starts: BTreeMap<u32, Vec<operators::Session>> = BTreeMap::new();
    for stored in sessions {
        starts
            .entry(stored.minute)
            .or_default()
            .push(operators::Session {
                tenant: tenant.into(),
                session_id: operators::MessageId::empty(),
                person_id: operators::empty_str(),
                visitor_id: operators::empty_str(),
                start_ms: stored.start_ms,
                end_ms: stored.end_ms,
                events: 0,
                page_views: 0,
                bounce: stored.is_bounce != 0,
                entry_path: operators::empty_str(),
                exit_path: operators::empty_str(),
                landing: Default::default(),
            });
    }
    minutes
        .iter()
        .map(|&minute| {
            let events = activities.get(&minute).map_or(&[][..], Vec::as_slice);
            let sessions = starts.get(&minute).map_or(&[][..], Vec::as_slice);
            let rows = minute_rollups(
                tenant,
                i64::from(minute) * 1000,
                events
                    .iter()
                    .map(|(activity, person, copies)| (activity, person, *copies)),
                sessions,
            );
            (minute, rows)
        })
        .collect()
}

/// The rollups as stored now (`FINAL`), by minute, as (metric, dimension) -> value.
async fn stored_rollups(
    client: &Client,
    tenant: &str,
    minutes: &[u32],
) -> Result<BTreeMap<(u32, String, String), i64>, clickhouse::error::Error> {
    let rows: Vec<StoredRollup> = client
        .query(&format!(
            "SELECT toUInt32(minute) AS minute, metric, dimension, value \
             FROM agg_minute_metrics FINAL WHERE tenant = {} AND ({})",
            quote(tenant),
            in_minutes("minute", minutes)
        ))
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.minute, row.metric, row.dimension), row.value))
        .collect())
}

/// The rows to write: each recounted value that differs from the stored one, and a 0 for
/// each stored value that has no recounted row (the table's way of writing a removal).
fn changes(
    tenant: &str,
    stored: &BTreeMap<(u32, String, String), i64>,
    recounted: &BTreeMap<u32, Vec<AggRow>>,
    version: u64,
) -> Vec<AggMinuteRow> {
    let mut fresh: BTreeMap<(u32, String, String), i64> = BTreeMap::new();
    for (minute, rows) in recounted {
        for row in rows {
            fresh.insert(
                (
                    *minute,
                    row.metric.as_str().to_owned(),
                    row.dimension.clone(),
                ),
                row.value,
            );
        }
    }
    let row = |(minute, metric, dimension): &(u32, String, String), value: i64| AggMinuteRow {
        tenant: tenant.to_owned(),
        minute: *minute,
        metric: metric.clone(),
        dimension: dimension.clone(),
        value,
        version,
    };
    let mut changed: Vec<AggMinuteRow> = fresh
        .iter()
        .filter(|(key, value)| stored.get(*key) != Some(*value))
        .map(|(key, value)| row(key, *value))
        .collect();
    changed.extend(
        stored
            .iter()
            .filter(|(key, value)| **value != 0 && !fresh.contains_key(*key))
            .map(|(key, _)| row(key, 0)),
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_changed_is_rewritten_and_one_that_vanished_is_written_as_zero() {
        let key = |metric: &str, dimension: &str| (60, metric.to_owned(), dimension.to_owned());
        let stored = BTreeMap::from([
            (key("page_views", "/a"), 3),
            (key("page_views", "/b"), 1),
            (key("unique_visitors", ""), 2),
            (key("bounces", ""), 0),
        ]);
        let row = |metric, dimension: &str, value| AggRow {
            tenant: "t".into(),
            minute_ms: 60_000,
            metric,
            dimension: dimension.into(),
            value,
        };
        let recounted = BTreeMap::from([(
            60,
            vec![
                row(operators::Metric::PageViews, "/a", 2),
                row(operators::Metric::UniqueVisitors, "", 2),
            ],
        )]);
        let written: Vec<_> = changes("t", &stored, &recounted, 7)
            .into_iter()
            .map(|row| (row.metric, row.dimension, row.value, row.version))
            .collect();
        assert_eq!(
            written,
            [
                ("page_views".to_owned(), "/a".to_owned(), 2, 7),
                ("page_views".to_owned(), "/b".to_owned(), 0, 7),
            ]
        );
    }
}
