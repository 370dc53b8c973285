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
