//! Sessions, identities, enriched events and per-minute aggregates, end to end: a generated
//! log of realistic clickstream (identifies, aliases across devices, out-of-order, late and
//! duplicate events) is produced to the real broker, a two-process engine cluster writes
//! ClickHouse, and every table is compared row by row with the single-threaded reference.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::collections::BTreeSet;

use common::reference::compare_with_reference;
use common::{Cluster, TestEnv, engine_config, produce, wait_until_checkpointed};
use loadgen::generator::{Generator, GeneratorConfig};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

const EVENTS: usize = 12_000;

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
    // that no state is released (retention is gap + lateness + margin = 72 h 40 min).
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
    let events: Vec<schemas::Event> = arrivals.into_iter().map(|a| a.event).collect();
    let log = produce(&producer, &topic, &events).await;
    let late = log
        .iter()
        .filter(|d| d.event.received_at_ms - d.event.timestamp_ms > 72 * 3_600_000)
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

    let (differences, expected) = compare_with_reference(&clickhouse, &database, &log).await;

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
