//! The crash run shared by the fault tests: a generated clickstream (identifies, aliases,
//! out-of-order, late and duplicate events) goes through the ingest gateway while engine
//! processes are killed with SIGKILL at random moments (the cluster restarted, often with
//! another `-w`/`-n`) and, if asked, ClickHouse is stopped and started. At the end every table
//! must equal the single-threaded reference's results. Half-way through, one person is erased
//! (a control record, as the query gateway writes it): the tables must then equal the
//! reference's on the log without that person's events, once the engine reports the erasure
//! completed, whatever the kills did to the run that read the record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use loadgen::generator::{Generator, GeneratorConfig, segment_json};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::reference::compare_with_reference;
use super::{
    ClickHouse, Cluster, TestEnv, checkpointed_records, engine_config, free_port, read_log,
    start_gateway, wait_until_checkpointed,
};

const TENANTS: &str = "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\n\
                       [[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\n";

/// The engine's default lateness horizon.
const LATENESS_MS: i64 = 72 * 3_600_000;

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
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

/// The request id of the crash run's erasure.
const ERASURE: &str = "crash-run-erasure";

/// The person the run erases: the most active user id of tenant acme and every id linked to
/// it, from the JSON sent ([`super::most_active_person`]).
fn person_to_erase(batches: &[(String, Vec<Value>)]) -> BTreeSet<String> {
    let field = |event: &Value, name: &str| event[name].as_str().unwrap_or("").to_owned();
    super::most_active_person(
        batches
            .iter()
            .filter(|(key, _)| key == "wk_acme")
            .flat_map(|(_, batch)| batch)
            .map(|event| {
                [
                    field(event, "anonymousId"),
                    field(event, "userId"),
                    field(event, "previousId"),
                ]
            })
            .collect(),
    )
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

/// What a crash run does.
#[derive(Debug, Clone)]
pub struct CrashOptions {
    /// Test name (topic and database prefix).
    pub name: &'static str,
    /// Events generated.
    pub events: usize,
    /// Engine processes killed, at least.
    pub min_kills: usize,
    /// Times ClickHouse is stopped and started, at least (on a private server).
    pub min_outages: usize,
    /// Seed of the events and of the faults.
    pub seed: u64,
}

/// A ClickHouse server of the test's own, which it may stop and start.
struct PrivateClickHouse {
    state: std::path::PathBuf,
    http_port: u16,
    tcp_port: u16,
}

impl PrivateClickHouse {
    fn script(&self, action: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse.sh");
        let status = Command::new("bash")
            .arg(&script)
            .arg(action)
            .env("CLICKSTREAM_STATE_DIR", &self.state)
            .env(
                "CLICKSTREAM_CLICKHOUSE_HTTP_PORT",
                self.http_port.to_string(),
            )
            .env("CLICKSTREAM_CLICKHOUSE_TCP_PORT", self.tcp_port.to_string())
            .status()
            .expect("run deploy/clickhouse.sh");
        assert!(status.success(), "deploy/clickhouse.sh {action} failed");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

impl Drop for PrivateClickHouse {
    /// A failed run keeps the server's data, to be started again and read
    /// (`CLICKSTREAM_STATE_DIR=<state> deploy/clickhouse.sh start`).
    fn drop(&mut self) {
        self.script("stop");
        if std::thread::panicking() {
            eprintln!(
                "the private ClickHouse's data is kept in {}",
                self.state.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.state);
        }
    }
}

/// Runs the crash run and asserts that every table equals the reference's.
pub async fn crash_run(options: CrashOptions) {
    let CrashOptions {
        name,
        events,
        min_kills,
        min_outages,
        seed,
    } = options;
    println!(
        "{name}: {events} events, at least {min_kills} kills and {min_outages} ClickHouse outages, seed {seed}"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let TestEnv {
        brokers,
        mut clickhouse,
        topic,
        database,
        dir,
    } = TestEnv::new(name).await;
    let private = (min_outages > 0).then(|| {
        let server = PrivateClickHouse {
            state: dir.join("state"),
            http_port: free_port(),
            tcp_port: free_port(),
        };
        server.script("start");
        clickhouse.url = server.url();
        server
    });
    let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    let (gateway, server) = start_gateway(&brokers, &topic, TENANTS).await;

    let batches = batches(events, seed);
    let sent: usize = batches.iter().map(|(_, batch)| batch.len()).sum();
    let erased = person_to_erase(&batches);
    let half = batches.len() / 2;
    let (control_brokers, control_topic) = (brokers.clone(), format!("{topic}_control"));
    let erased_ids = erased.clone();
    // Spread the traffic over about 30 seconds, so that faults land while it flows.
    let pause = Duration::from_millis(30_000 / batches.len().max(1) as u64);
    let feeder = tokio::spawn(async move {
        let http = reqwest::Client::new();
        for (index, (key, batch)) in batches.into_iter().enumerate() {
            if index == half {
                super::request_erasure(
                    &control_brokers,
                    &control_topic,
                    ERASURE,
                    "acme",
                    &erased_ids,
                )
                .await;
            }
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
    // The first run creates the schema; faults start once it has committed a checkpoint.
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
    let (mut kills, mut outages) = (0, 0);
    let mut covered_at_start = checkpointed_records(&clickhouse, &database)
        .await
        .unwrap_or(0);
    while kills < min_kills || outages < min_outages || !feeder.is_finished() {
        // Most faults wait until the restarted cluster has replayed and committed something
        // new (a restart replays the whole state horizon, which grows with the log); the
        // others strike during start-up and replay.
        // Once the whole log is checkpointed there is nothing new to commit.
        if rng.random_bool(0.7) && !(feeder.is_finished() && covered_at_start >= sent) {
            let deadline = Instant::now() + Duration::from_secs(180);
            while checkpointed_records(&clickhouse, &database)
                .await
                .unwrap_or(0)
                <= covered_at_start
                && !(feeder.is_finished() && kills >= min_kills && outages >= min_outages)
            {
                cluster.assert_running();
                assert!(
                    Instant::now() < deadline,
                    "no progress after a restart:\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_500))).await;
        if let Some(server) = private.as_ref().filter(|_| rng.random_bool(0.4)) {
            let covered = checkpointed_records(&clickhouse, &database)
                .await
                .unwrap_or(0);
            let down_for = Duration::from_millis(rng.random_range(2_000..6_000));
            server.script("stop");
            outages += 1;
            println!(
                "outage {outages}: ClickHouse stopped for {} ms at {covered} records checkpointed",
                down_for.as_millis()
            );
            tokio::time::sleep(down_for).await;
            // The engine waits for ClickHouse; it must neither exit nor lose anything.
            cluster.assert_running();
            server.script("start");
            continue;
        }
        let victim = rng.random_range(0..cluster.processes());
        let before = cluster.processes();
        cluster.kill(victim);
        // A kill while the new cluster is still forming leaves the peers waiting for it until
        // `connect_timeout_secs` (20 s here) after they began to form, and just after an
        // outage they may begin only once ClickHouse answers again: 60 s bounds both.
        let down = tokio::task::block_in_place(|| cluster.wait_down(Duration::from_secs(60)));
        kills += 1;
        let (processes, workers) = shapes[rng.random_range(0..shapes.len())];
        let covered = checkpointed_records(&clickhouse, &database)
            .await
            .unwrap_or(0);
        println!(
            "kill {kills:>2}: SIGKILL to process {victim} of {before}, cluster down in {:>5} ms, \
             {covered} records checkpointed; restarting with -n {processes} -w {workers}",
            down.as_millis()
        );
        cluster = Cluster::start_shape(&dir, &config, processes, workers);
        covered_at_start = covered;
    }
    feeder.await.expect("every batch accepted");

    let log = read_log(&brokers, &topic, sent);
    assert_eq!(log.len(), sent, "every accepted event is in the topic");
    wait_until_checkpointed(&clickhouse, &database, log.len(), &mut cluster).await;
    super::wait_for_erasure(&clickhouse, &database, ERASURE, &mut cluster).await;
    let kept = super::without_person(&log, "acme", &erased);
    println!(
        "{kills} kills, {outages} ClickHouse outages; one person erased half-way ({} ids, {} of \
         {} events); comparing every table with the reference on the log without them:",
        erased.len(),
        log.len() - kept.len(),
        log.len()
    );
    assert!(log.len() > kept.len(), "the erased person had events");
    let (differences, expected) = compare_with_reference(&clickhouse, &database, &kept).await;
    wait_for_progress(&clickhouse, &database, &log).await;
    cluster.assert_running();

    assert!(
        expected.sessions.len() > events / 50,
        "sessions: {}",
        expected.sessions.len()
    );
    assert!(
        expected.identities.len() > events / 500,
        "identities: {}",
        expected.identities.len()
    );
    assert!(!expected.late.is_empty(), "the log has late events");
    assert_eq!(
        differences, 0,
        "ClickHouse differs from the reference after {kills} kills and {outages} outages"
    );

    drop(cluster);
    server.abort();
    if private.is_none() {
        clickhouse.query(&format!("DROP DATABASE {database}")).await;
    }
    drop(private);
    let _ = std::fs::remove_dir_all(&dir);
}
