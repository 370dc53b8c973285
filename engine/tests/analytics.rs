//! Sessions, identities, enriched events and per-minute aggregates, end to end: a generated
//! log of realistic clickstream (identifies, aliases across devices, out-of-order, late and
//! duplicate events) is produced to the real broker, a two-process engine cluster writes
//! ClickHouse, and every table is compared row by row with the single-threaded reference.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::collections::BTreeSet;

use benches::generator::{Generator, GeneratorConfig};
use common::{ClickHouse, Cluster, TestEnv, engine_config, wait_until_checkpointed};
use operators::reference::analyze;
use operators::{AnalyticsSettings, Decoded, IdKind};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const EVENTS: usize = 12_000;

async fn tsv(clickhouse: &ClickHouse, sql: &str) -> BTreeSet<String> {
    clickhouse
        .query(&format!("{sql} FORMAT TabSeparated"))
        .await
        .lines()
        .map(str::to_owned)
        .collect()
}

fn compare(table: &str, actual: &BTreeSet<String>, expected: &BTreeSet<String>) -> usize {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_identities_and_aggregates_match_the_reference() {
    let TestEnv {
        brokers,
        clickhouse,
        topic,
        database,
        dir,
    } = TestEnv::new("analytics").await;

    // A reproducible log, produced in arrival order; the broker's positions are kept because
    // deduplication keeps the first position of a message id.
    // ~70 simulated minutes: long enough for 30-minute gaps to split sessions, short enough
    // that no state is released (retention is gap + lateness + margin = 100 minutes).
    let config = GeneratorConfig {
        seed: 7,
        tenants: vec!["acme".into(), "globex".into()],
        sessions_per_sec: 0.5,
        ..GeneratorConfig::default()
    };
    let arrivals = Generator::new(config, 1_700_000_000_000)
        .expect("generator")
        .generate(EVENTS);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    let mut deliveries = Vec::with_capacity(arrivals.len());
    for arrival in &arrivals {
        let (key, payload) = (
            arrival.event.partition_key(),
            schemas::wire::encode(&arrival.event),
        );
        deliveries.push(
            producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                .expect("enqueue"),
        );
    }
    let mut log = Vec::with_capacity(arrivals.len());
    for (delivery, arrival) in deliveries.into_iter().zip(&arrivals) {
        let delivered = delivery
            .await
            .expect("delivery report")
            .expect("acknowledged");
        log.push(Decoded {
            partition: delivered.partition,
            offset: delivered.offset,
            event: arrival.event.clone(),
        });
    }
    let late = log
        .iter()
        .filter(|d| d.event.received_at_ms - d.event.timestamp_ms > 3_600_000)
        .count();
    let distinct: BTreeSet<_> = log.iter().map(|d| &d.event.message_id).collect();
    println!(
        "log: {} records, {} duplicates, {late} late",
        log.len(),
        log.len() - distinct.len()
    );

    let config_file = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    let mut cluster = Cluster::start(&dir, &config_file, 2);
    wait_until_checkpointed(&clickhouse, &database, log.len(), &mut cluster).await;

    let expected = analyze(&log, &[], &AnalyticsSettings::default());
    let mut differences = 0;

    let sessions = tsv(
        &clickhouse,
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
        &clickhouse,
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

    let events = tsv(
        &clickhouse,
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

    let identities = tsv(&clickhouse, &format!("SELECT tenant, id_kind, id, person_id FROM {database}.identities FINAL WHERE deleted = 0")).await;
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

    assert!(
        expected.sessions.len() > 500,
        "the log exercises sessions: {}",
        expected.sessions.len()
    );
    assert!(
        expected.identities.len() > 100,
        "the log exercises identity: {}",
        expected.identities.len()
    );
    assert!(!expected.late.is_empty(), "the log has late events");
    assert_eq!(differences, 0, "ClickHouse differs from the reference");

    drop(cluster);
    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&dir);
}
