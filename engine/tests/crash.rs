//! Exactly-once under crashes: a generated clickstream (identifies, aliases, out-of-order,
//! late and duplicate events) goes through the ingest gateway while engine processes are
//! killed with SIGKILL at random moments and the cluster is restarted, often with another
//! `-w`/`-n`. At the end every table must equal the single-threaded reference's results.
//!
//! The defaults are what CI runs. The longer version (`deploy/crash-test.sh`) sets
//! `CLICKSTREAM_CRASH_EVENTS`, `CLICKSTREAM_CRASH_KILLS` and `CLICKSTREAM_CRASH_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use benches::generator::{Generator, GeneratorConfig, segment_json};
use common::reference::compare_with_reference;
use common::{
    ClickHouse, Cluster, TestEnv, checkpointed_records, engine_config, read_log, start_gateway,
    wait_until_checkpointed,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TENANTS: &str = "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\n\
                       [[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\n";

/// The engine's default lateness horizon.
const LATENESS_MS: i64 = 3_600_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Batches of Segment JSON per write key, in arrival order. Everything is sent within a minute,
/// so the simulated timeline (about half an hour, whatever the event count) is moved to end
/// now, and an event the generator delivers past the lateness horizon gets a time that far
/// in the past. `sentAt` is left out so the gateway keeps each event's time (a skew correction
/// would fold the simulated half hour into the seconds the test takes).
fn batches(events: usize, seed: u64) -> Vec<(String, Vec<Value>)> {
    let config = GeneratorConfig {
        seed,
        tenants: vec!["acme".into(), "globex".into()],
        sessions_per_sec: 5.0 * (events as f64 / 50_000.0).max(1.0),
        ..GeneratorConfig::default()
    };
    let arrivals = Generator::new(config, 1_700_000_000_000)
        .expect("generator")
        .generate(events);
    let now = chrono::Utc::now().timestamp_millis();
    let newest = arrivals
        .iter()
        .map(|a| a.event.timestamp_ms)
        .max()
        .unwrap_or(0);
    let mut batches: Vec<(String, Vec<Value>)> = Vec::new();
    for arrival in arrivals {
        let mut event = arrival.event;
        let delay = arrival.arrival_ms - event.timestamp_ms;
        event.timestamp_ms = if delay > LATENESS_MS {
            now - delay
        } else {
            event.timestamp_ms + (now - newest)
        };
        let mut body = segment_json(&event, 0);
        body.as_object_mut().expect("object").remove("sentAt");
        let key = format!("wk_{}", event.tenant);
        match batches.last_mut() {
            Some((last_key, batch)) if *last_key == key && batch.len() < 100 => batch.push(body),
            _ => batches.push((key, vec![body])),
        }
    }
    batches
}

/// Per tenant, the newest receive time in the log.
fn newest_received(log: &[operators::Decoded]) -> BTreeMap<String, i64> {
    let mut newest = BTreeMap::new();
    for record in log {
        let entry = newest
            .entry(record.event.tenant.clone())
            .or_insert(i64::MIN);
        *entry = (*entry).max(record.event.received_at_ms);
    }
    newest
}

/// Waits until `_progress` says every tenant is complete up to its newest event.
async fn wait_for_progress(clickhouse: &ClickHouse, database: &str, log: &[operators::Decoded]) {
    let expected = newest_received(log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = clickhouse
            .rows(&format!(
                "SELECT tenant, complete_until_ms FROM {database}._progress FINAL ORDER BY tenant"
            ))
            .await;
        let progress: BTreeMap<String, i64> = rows
            .iter()
            .map(|row| {
                let until = row["complete_until_ms"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| row["complete_until_ms"].as_i64())
                    .expect("complete_until_ms");
                (row["tenant"].as_str().expect("tenant").to_owned(), until)
            })
            .collect();
        let complete = progress.keys().eq(expected.keys())
            && expected
                .iter()
                .all(|(tenant, newest)| progress.get(tenant).is_some_and(|until| until >= newest));
        if complete {
            let now = chrono::Utc::now().timestamp_millis();
            assert!(
                progress.values().all(|until| *until <= now),
                "progress in the future: {progress:?}"
            );
            println!(
                "_progress            {progress:?} covers the newest events {expected:?}: 0 differences"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "_progress {progress:?} never covered the newest events {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_exact_after_repeated_sigkills() {
    let events: usize = env_or("CLICKSTREAM_CRASH_EVENTS", 50_000);
    let min_kills: usize = env_or("CLICKSTREAM_CRASH_KILLS", 10);
    let seed: u64 = env_or("CLICKSTREAM_CRASH_SEED", rand::random::<u32>() as u64);
    println!("crash test: {events} events, at least {min_kills} kills, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let TestEnv {
        brokers,
        clickhouse,
        topic,
        database,
        dir,
    } = TestEnv::new("crash").await;
    let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    let (gateway, server) = start_gateway(&brokers, &topic, TENANTS).await;

    let batches = batches(events, seed);
    let sent: usize = batches.iter().map(|(_, batch)| batch.len()).sum();
    // Spread the traffic over about 30 seconds, so that kills land while it flows.
    let pause = Duration::from_millis(30_000 / batches.len().max(1) as u64);
    let feeder = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for (key, batch) in batches {
            let response = http
                .post(format!("http://{gateway}/v1/batch"))
                .basic_auth(&key, Some(""))
                .json(&json!({ "batch": batch }))
                .send()
                .await
                .expect("gateway reachable");
            let status = response.status();
            assert_eq!(status, 200, "{}", response.text().await.unwrap_or_default());
            tokio::time::sleep(pause).await;
        }
    });

    let shapes = [(3, 1), (2, 1), (1, 2), (3, 2), (2, 2), (1, 1)];
    let mut cluster = Cluster::start_shape(&dir, &config, 3, 1);
    // The first run creates the schema; kill only once it has committed a checkpoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    while checkpointed_records(&clickhouse, &database)
        .await
        .unwrap_or(0)
        == 0
    {
        cluster.assert_running();
        assert!(
            Instant::now() < deadline,
            "no first checkpoint:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut kills = 0;
    while kills < min_kills || !feeder.is_finished() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_500))).await;
        let victim = rng.random_range(0..cluster.processes());
        let before = cluster.processes();
        cluster.kill(victim);
        let down = tokio::task::block_in_place(|| cluster.wait_down(Duration::from_secs(30)));
        kills += 1;
        let (processes, workers) = shapes[rng.random_range(0..shapes.len())];
        let covered = checkpointed_records(&clickhouse, &database)
            .await
            .unwrap_or(0);
        println!(
            "kill {kills:>2}: SIGKILL to process {victim} of {before}, cluster down in {:>4} ms, \
             {covered} records checkpointed; restarting with -n {processes} -w {workers}",
            down.as_millis()
        );
        cluster = Cluster::start_shape(&dir, &config, processes, workers);
    }
    feeder.await.expect("every batch accepted");

    let log = read_log(&brokers, &topic, sent);
    assert_eq!(log.len(), sent, "every accepted event is in the topic");
    wait_until_checkpointed(&clickhouse, &database, log.len(), &mut cluster).await;
    println!("{kills} kills; comparing every table with the reference:");
    let (differences, expected) = compare_with_reference(&clickhouse, &database, &log).await;
    wait_for_progress(&clickhouse, &database, &log).await;
    cluster.assert_running();

    assert!(kills >= min_kills);
    assert!(
        expected.sessions.len() > 1_000,
        "sessions: {}",
        expected.sessions.len()
    );
    assert!(
        expected.identities.len() > 100,
        "identities: {}",
        expected.identities.len()
    );
    assert!(!expected.late.is_empty(), "the log has late events");
    assert_eq!(
        differences, 0,
        "ClickHouse differs from the reference after {kills} kills"
    );

    drop(cluster);
    server.abort();
    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&dir);
}
