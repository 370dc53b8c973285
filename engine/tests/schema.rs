//! An engine started against tables created by an older version (another sort key) must stop
//! at once and say which table and what to do, not write into a table every reader then
//! scans in full.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestEnv, engine_config};

#[tokio::test(flavor = "multi_thread")]
async fn a_table_with_an_outdated_sort_key_stops_the_engine() {
    let env = TestEnv::new("schema").await;
    let (clickhouse, database) = (&env.clickhouse, &env.database);
    clickhouse
        .query(&format!("CREATE DATABASE {database}"))
        .await;
    // `events` as the first release created it: sorted by day.
    clickhouse
        .query(&format!(
            "CREATE TABLE {database}.events (tenant String, message_id String, event_time DateTime, version UInt64) \
             ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(event_time) \
             ORDER BY (tenant, toDate(event_time), message_id)"
        ))
        .await;
    let config = engine_config(
        &env.dir,
        &env.brokers,
        &env.topic,
        &clickhouse.url,
        database,
    );

    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_engine"))
            .arg("--config")
            .arg(&config)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run engine")
    })
    .await
    .expect("engine thread");
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "engine exited with {} after {} ms:\n{stderr}",
        output.status,
        started.elapsed().as_millis()
    );
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("table {database}.events has"))
            && stderr.contains("ORDER BY (tenant, event_time, message_id)")
            && stderr.contains("deploy/down.sh --purge"),
        "{stderr}"
    );
    // Refused at once, not after the start-up retries (minutes).
    assert!(started.elapsed() < Duration::from_secs(30));

    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&env.dir);
}

/// Issue 11: a write that waiting cannot fix (here a column the sessions sink writes was
/// dropped under the running engine, ClickHouse code 16) stops the engine with exit status 3
/// and the whole error chain, instead of retrying forever behind a warning. A write that can
/// pass (the server unreachable) is retried: that is the outage test.
#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_write_error_stops_the_engine_with_its_cause() {
    use common::{Cluster, produce, wait_until_checkpointed};
    use rdkafka::ClientConfig;
    use rdkafka::producer::FutureProducer;

    let env = TestEnv::new("permanent").await;
    let (clickhouse, database) = (&env.clickhouse, &env.database);
    let config = engine_config(
        &env.dir,
        &env.brokers,
        &env.topic,
        &clickhouse.url,
        database,
    );
    let mut cluster = Cluster::start(&env.dir, &config, 1);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .expect("producer");
    let page = |id: &str| {
        let mut event =
            schemas::Event::new("acme", id, schemas::EventKind::Page, 1_700_000_000_000);
        event.anonymous_id = "a1".into();
        event.received_at_ms = event.timestamp_ms;
        event
    };
    let first = produce(&producer, &env.topic, &[page("m1")]).await;
    wait_until_checkpointed(clickhouse, database, first.len(), &mut cluster).await;

    clickhouse
        .query(&format!(
            "ALTER TABLE {database}.sessions DROP COLUMN utm_campaign"
        ))
        .await;
    produce(&producer, &env.topic, &[page("m2")]).await;
    let waited = tokio::task::block_in_place(|| cluster.wait_down(Duration::from_secs(60)));
    let logs = cluster.logs();
    println!(
        "engine stopped {} ms after the second event:\n{logs}",
        waited.as_millis()
    );
    let status = cluster.statuses()[0].expect("exited");
    assert_eq!(status.code(), Some(3), "{logs}");
    assert!(
        logs.contains("permanent error") && logs.contains("sessions") && logs.contains("Code: 16"),
        "{logs}"
    );
    let retries = logs.matches("ClickHouse write failed; retrying").count();
    assert_eq!(retries, 0, "a permanent error is not retried:\n{logs}");

    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&env.dir);
}
