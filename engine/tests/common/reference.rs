//! The whole comparison of ClickHouse with the single-threaded reference, table by table.

use std::collections::BTreeSet;

use operators::reference::{Results, analyze};
use operators::{AnalyticsSettings, Decoded, IdKind};

use super::ClickHouse;

pub async fn tsv(clickhouse: &ClickHouse, sql: &str) -> BTreeSet<String> {
    clickhouse
        .query(&format!("{sql} FORMAT TabSeparated"))
        .await
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn compare(table: &str, actual: &BTreeSet<String>, expected: &BTreeSet<String>) -> usize {
    let missing: Vec<_> = expected.difference(actual).take(5).collect();
    let unexpected: Vec<_> = actual.difference(expected).take(5).collect();
    let differences = expected.symmetric_difference(actual).count();
    println!(
        "{table:<20} {:>7} rows in ClickHouse, {:>7} expected, {differences} differences",
        actual.len(),
        expected.len()
    );
    if differences > 0 {
        println!("  missing (first 5): {missing:#?}\n  unexpected (first 5): {unexpected:#?}");
    }
    differences
}

/// Compares `events`, `sessions`, `identities`, `agg_minute_metrics` and `agg_hour_visitors` with the reference's
/// results for `log` (default settings); prints a line per table and returns the number of
/// differing rows, with the reference's results.
pub async fn compare_with_reference(
    clickhouse: &ClickHouse,
    database: &str,
    log: &[Decoded],
) -> (usize, Results) {
    let expected = analyze(log, &[], &AnalyticsSettings::default());
    let mut differences = 0;

    let sessions = tsv(
        clickhouse,
        &format!(
            "SELECT tenant, session_id, person_id, visitor_id, start_ms, end_ms, events, page_views, entry_path, exit_path, \
             entry_referrer, utm_source, utm_medium, utm_campaign FROM {database}.sessions FINAL WHERE deleted = 0"
        ),
    )
    .await;
    let expected_sessions: BTreeSet<String> = expected
        .sessions
        .iter()
        .map(|s| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                s.tenant,
                s.session_id,
                s.person_id,
                s.visitor_id,
                s.start_ms,
                s.end_ms,
                s.events,
                s.page_views,
                s.entry_path,
                s.exit_path,
                s.entry_referrer,
                s.utm_source,
                s.utm_medium,
                s.utm_campaign
            )
        })
        .collect();
    differences += compare("sessions", &sessions, &expected_sessions);

    let aggregates = tsv(
        clickhouse,
        &format!(
            "SELECT tenant, toUInt64(toUnixTimestamp(minute)) * 1000, metric, dimension, value \
             FROM {database}.agg_minute_metrics FINAL WHERE value != 0"
        ),
    )
    .await;
    let expected_aggregates: BTreeSet<String> = expected
        .aggregates
        .iter()
        .map(|a| {
            format!(
                "{}\t{}\t{}\t{}\t{}",
                a.tenant,
                a.minute_ms,
                a.metric.as_str(),
                a.dimension,
                a.value
            )
        })
        .collect();
    differences += compare("agg_minute_metrics", &aggregates, &expected_aggregates);

    let visitor_hours = tsv(
        clickhouse,
        &format!(
            "SELECT tenant, toUInt64(toUnixTimestamp(hour)) * 1000, visitor_id, person_id, events, page_views \
             FROM {database}.agg_hour_visitors FINAL WHERE events != 0"
        ),
    )
    .await;
    let expected_visitor_hours: BTreeSet<String> = expected
        .visitor_hours
        .iter()
        .map(|v| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                v.tenant, v.hour_ms, v.visitor_id, v.person_id, v.events, v.page_views
            )
        })
        .collect();
    differences += compare("agg_hour_visitors", &visitor_hours, &expected_visitor_hours);

    let events = tsv(
        clickhouse,
        &format!("SELECT message_id, session_id, person_id, late FROM {database}.events FINAL"),
    )
    .await;
    let expected_events: BTreeSet<String> = expected
        .events
        .iter()
        .map(|e| {
            format!(
                "{}\t{}\t{}\t0",
                e.event.message_id, e.session_id, e.person_id
            )
        })
        .chain(expected.late.iter().map(|id| format!("{id}\t\t\t1")))
        .collect();
    differences += compare("events", &events, &expected_events);

    let identities = tsv(clickhouse, &format!("SELECT tenant, id_kind, id, person_id FROM {database}.identities FINAL WHERE deleted = 0")).await;
    let expected_identities: BTreeSet<String> = expected
        .identities
        .iter()
        .map(|(node, person)| {
            let kind = if node.kind == IdKind::User {
                "user"
            } else {
                "anonymous"
            };
            format!("{}\t{kind}\t{}\t{}", node.tenant, node.id, person.id)
        })
        .collect();
    differences += compare("identities", &identities, &expected_identities);

    (differences, expected)
}
