//! The whole comparison of ClickHouse with the single-threaded reference, table by table.

use std::collections::BTreeSet;
use std::fmt::Display;

use operators::reference::{Results, analyze};
use operators::{AnalyticsSettings, Decoded, IdKind};

use super::ClickHouse;

async fn tsv(clickhouse: &ClickHouse, sql: &str) -> BTreeSet<String> {
    clickhouse
        .query(&format!("{sql} FORMAT TabSeparated"))
        .await
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One row as ClickHouse's `TabSeparated` prints it.
fn row(fields: &[&dyn Display]) -> String {
    fields
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\t")
}

/// Reads `sql` and compares its rows with `expected`; prints a line for `table` and returns
/// the number of differing rows.
async fn compare(
    clickhouse: &ClickHouse,
    table: &str,
    sql: &str,
    expected: BTreeSet<String>,
) -> usize {
    let actual = tsv(clickhouse, sql).await;
    let missing: Vec<_> = expected.difference(&actual).take(5).collect();
    let unexpected: Vec<_> = actual.difference(&expected).take(5).collect();
    let differences = expected.symmetric_difference(&actual).count();
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

/// Compares `events`, `sessions`, `identities`, `agg_minute_metrics`, `agg_hour_visitors` and
/// `ingestion_warnings` with the reference's
/// results for `log` (default settings); prints a line per table and returns the number of
/// differing rows, with the reference's results.
pub async fn compare_with_reference(
    clickhouse: &ClickHouse,
    database: &str,
    log: &[Decoded],
) -> (usize, Results) {
    let expected = analyze(log, &[], &AnalyticsSettings::default());
    let mut differences = 0;

    differences += compare(
        clickhouse,
        "sessions",
        &format!(
            "SELECT tenant, session_id, person_id, visitor_id, start_ms, end_ms, events, page_views, is_bounce, entry_path, exit_path, \
             entry_referrer, utm_source, utm_medium, utm_campaign, utm_content, utm_term, source, channel, \
             device, browser, browser_version, os, os_version, country, region, city \
             FROM {database}.sessions FINAL WHERE deleted = 0"
        ),
        expected
            .sessions
            .iter()
            .map(|s| {
                row(&[
                    &s.tenant,
                    &s.session_id,
                    &s.person_id,
                    &s.visitor_id,
                    &s.start_ms,
                    &s.end_ms,
                    &s.events,
                    &s.page_views,
                    &u8::from(s.bounce),
                    &s.entry_path,
                    &s.exit_path,
                    &s.landing.referrer,
                    &s.landing.campaign.source,
                    &s.landing.campaign.medium,
                    &s.landing.campaign.name,
                    &s.landing.campaign.content,
                    &s.landing.campaign.term,
                    &s.landing.acquisition.source,
                    &s.landing.acquisition.channel,
                    &s.landing.client.device,
                    &s.landing.client.browser,
                    &s.landing.client.browser_version,
                    &s.landing.client.os,
                    &s.landing.client.os_version,
                    &s.landing.location.country,
                    &s.landing.location.region,
                    &s.landing.location.city,
                ])
            })
            .collect(),
    )
    .await;

    differences += compare(
        clickhouse,
        "agg_minute_metrics",
        &format!(
            "SELECT tenant, toUInt64(toUnixTimestamp(minute)) * 1000, metric, dimension, value \
             FROM {database}.agg_minute_metrics FINAL WHERE value != 0"
        ),
        expected
            .aggregates
            .iter()
            .map(|a| {
                row(&[
                    &a.tenant,
                    &a.minute_ms,
                    &a.metric.as_str(),
                    &a.dimension,
                    &a.value,
                ])
            })
            .collect(),
    )
    .await;

    differences += compare(
        clickhouse,
        "agg_hour_visitors",
        &format!(
            "SELECT tenant, toUInt64(toUnixTimestamp(hour)) * 1000, visitor_id, person_id, events, page_views \
             FROM {database}.agg_hour_visitors FINAL WHERE events != 0"
        ),
        expected
            .visitor_hours
            .iter()
            .map(|v| {
                row(&[
                    &v.tenant,
                    &v.hour_ms,
                    &v.visitor_id,
                    &v.person_id,
                    &v.events,
                    &v.page_views,
                ])
            })
            .collect(),
    )
    .await;

    differences += compare(
        clickhouse,
        "events",
        &format!("SELECT message_id, session_id, person_id, late FROM {database}.events FINAL"),
        expected
            .events
            .iter()
            .map(|e| row(&[&e.message_id, &e.session_id, &e.person_id, &0]))
            .chain(expected.late.iter().map(|id| row(&[id, &"", &"", &1])))
            .collect(),
    )
    .await;

    differences += compare(
        clickhouse,
        "identities",
        &format!(
            "SELECT tenant, id_kind, id, person_id FROM {database}.identities FINAL WHERE deleted = 0"
        ),
        expected
            .identities
            .iter()
            .map(|(node, person)| {
                let kind = if node.kind() == IdKind::User {
                    "user"
                } else {
                    "anonymous"
                };
                row(&[node.tenant(), &kind, &node.id, &person.id])
            })
            .collect(),
    )
    .await;

    differences += compare(
        clickhouse,
        "ingestion_warnings",
        &format!(
            "SELECT tenant, type, message_id, field, value, event_time_ms FROM {database}.ingestion_warnings FINAL"
        ),
        expected
            .warnings
            .iter()
            .map(|w| {
                row(&[
                    &w.tenant,
                    &"placeholder_id",
                    &w.message_id,
                    &w.field.as_str(),
                    &w.id,
                    &w.time_ms,
                ])
            })
            .collect(),
    )
    .await;

    (differences, expected)
}
