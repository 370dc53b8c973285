//! A broker that lost its log must never be taken for the old one. An engine checkpoints a
//! log on one broker (librdkafka's mock cluster); a second broker then serves another log
//! under the same topic name, as a restarted in-memory broker or a recreated topic would.
//! Whether the new log is shorter than the checkpoint or has regrown past its offsets, the
//! engine must stall: record why in `_log_stalls`, say so in `/api/progress` and on the
//! query gateway's `/metrics` (where the alert reads it), exit with status 4, and store none
//! of the new log's events. `engine --accept-new-log` then resumes from the new log's start
//! with every earlier result kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::{
    ClickHouse, Cluster, PARTITIONS, engine_config, produce, required_env, wait_until_checkpointed,
};
use loadgen::generator::{Generator, GeneratorConfig};
use query_gateway::{AppState, metrics_router, router};
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};
use serde_json::Value;
use tower::ServiceExt;

/// Each partition's newest `_log_stalls` row, if unresolved (written here, not taken from the
/// engine: the oracle reads the table as its documented contract says).
const OPEN_STALLS: &str = "SELECT partition, argMax(reason, detected_at_ms) AS why \
     FROM {db}._log_stalls GROUP BY partition HAVING argMax(resolved, detected_at_ms) = 0";

/// Events of the first log, checkpointed before the broker "loses" it.
const OLD_EVENTS: usize = 1_200;
/// The engine's exit status for a log that is not the checkpoints' (`retry::EXIT_LOG_MISMATCH`,
/// restated here: the test checks the documented contract, not the constant).
const EXIT_LOG_MISMATCH: i32 = 4;

fn events(seed: u64, count: usize) -> Vec<schemas::Event> {
    Generator::new(
        GeneratorConfig {
            seed,
            tenants: vec!["acme".into()],
            sessions_per_sec: 0.5,
            ..GeneratorConfig::default()
        },
        1_700_000_000_000 + seed as i64 * 86_400_000,
    )
    .expect("generator")
    .generate(count)
    .into_iter()
    .map(|arrival| arrival.event)
    .collect()
}

/// A broker of its own holding `topic` with `log`'s events.
async fn broker_with(
    topic: &str,
    log: &[schemas::Event],
) -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(topic, PARTITIONS, 1).expect("topic");
    mock.create_topic(&format!("{topic}_control"), 1, 1)
        .expect("control topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    produce(&producer, topic, log).await;
    mock
}

/// Distinct message ids of `log` (the generator repeats some, as SDK retries do).
fn distinct(log: &[schemas::Event]) -> usize {
    log.iter()
        .map(|e| &e.message_id)
        .collect::<std::collections::HashSet<_>>()
        .len()
}

struct Setup {
    clickhouse: ClickHouse,
    topic: String,
    database: String,
    dir: std::path::PathBuf,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let suffix = format!(
            "{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let dir = std::env::temp_dir().join(format!("clickstream-{name}-{suffix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Setup {
            clickhouse: ClickHouse {
                url: required_env("CLICKSTREAM_CLICKHOUSE_URL"),
                http: reqwest::Client::new(),
            },
            topic: format!("{name}_{suffix}"),
            database: format!("{name}_{suffix}"),
            dir,
        }
    }

    /// The engine's configuration for `brokers`, in a directory of its own.
    fn config(&self, brokers: &str, run: &str) -> std::path::PathBuf {
        let dir = self.dir.join(run);
        std::fs::create_dir_all(&dir).expect("dir");
        engine_config(
            &dir,
            brokers,
            &self.topic,
            &self.clickhouse.url,
            &self.database,
        )
    }

    async fn count(&self, sql: &str) -> usize {
        let sql = sql.replace("{db}", &self.database);
        self.clickhouse
            .query(&sql)
            .await
            .trim()
            .parse()
            .expect("a count")
    }

    /// Message ids of `log` stored in `events`.
    async fn stored(&self, log: &[schemas::Event]) -> usize {
        let ids: Vec<String> = log.iter().map(|e| format!("'{}'", e.message_id)).collect();
        self.count(&format!(
            "SELECT count() FROM {{db}}.events FINAL WHERE message_id IN ({})",
            ids.join(",")
        ))
        .await
    }

    fn gateway(&self) -> Arc<AppState> {
        Arc::new(AppState::offline(
            schemas::tenants::Tenants::parse(
                "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\nread_keys=['rk_acme']\n",
            )
            .expect("tenants"),
            &self.clickhouse.url,
            &self.database,
        ))
    }
}

async fn get(app: axum::Router, path: &str, key: Option<&str>) -> String {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = app
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8(body.to_vec()).expect("UTF-8")
}

/// Waits for the cluster's one process to exit; returns its status code.
fn wait_for_exit(cluster: &mut Cluster, timeout: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = cluster.statuses()[0] {
            return status.code();
        }
        assert!(
            started.elapsed() < timeout,
            "the engine still runs {timeout:?} after it met another log; logs:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checkpoints `OLD_EVENTS` on a first broker, then starts the engine on a second broker
/// holding `new_log`: it must stall with `reason` on every partition and exit with status 4.
async fn stalls_on(setup: &Setup, new_log: &[schemas::Event], reason: &str) {
    let old_log = events(1, OLD_EVENTS);
    let old_broker = broker_with(&setup.topic, &old_log).await;
    let config = setup.config(&old_broker.bootstrap_servers(), "old");
    let mut cluster = Cluster::start(&setup.dir, &config, 1);
    wait_until_checkpointed(&setup.clickhouse, &setup.database, OLD_EVENTS, &mut cluster).await;
    drop(cluster);
    drop(old_broker);
    assert_eq!(setup.stored(&old_log).await, distinct(&old_log));

    let new_broker = broker_with(&setup.topic, new_log).await;
    let config = setup.config(&new_broker.bootstrap_servers(), "new");
    let mut cluster =
        Cluster::start_with(&setup.dir, &config, 1, 1, &["--log-loss-timeout-secs", "4"]);
    let stalls = format!("SELECT count() FROM ({OPEN_STALLS}) WHERE why = '{reason}'");
    let deadline = Instant::now() + Duration::from_secs(60);
    while setup.count(&stalls).await < PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "no stall recorded; logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While it stalls, the gateway answers that it does, and /metrics carries it.
    let gateway = setup.gateway();
    let progress: Value =
        serde_json::from_str(&get(router(gateway.clone()), "/api/progress", Some("rk_acme")).await)
            .expect("JSON");
    let stalled = &progress["stalled"];
    assert_eq!(
        stalled["partitions"].as_array().map(Vec::len),
        Some(PARTITIONS as usize),
        "{progress}"
    );
    assert_eq!(stalled["partitions"][0]["reason"], reason, "{progress}");
    assert!(
        stalled["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not the one"),
        "{progress}"
    );
    let metrics = get(metrics_router(gateway), "/metrics", None).await;
    assert!(
        metrics.contains(&format!(
            "clickstream_query_log_stalled_partitions {PARTITIONS}"
        )),
        "{metrics}"
    );

    let status = wait_for_exit(&mut cluster, Duration::from_secs(60));
    assert_eq!(status, Some(EXIT_LOG_MISMATCH), "logs:\n{}", cluster.logs());
    let logs = cluster.logs();
    assert!(
        logs.contains("--accept-new-log"),
        "the exit names the recovery:\n{logs}"
    );
    assert_eq!(
        setup.stored(new_log).await,
        0,
        "a new log's event was written"
    );
    assert_eq!(setup.stored(&old_log).await, distinct(&old_log));
    accept_and_resume(setup, &config, &old_log, new_log, &new_broker).await;
}

/// `engine --accept-new-log`, then a normal start: the new log is read from its start, the
/// old results stay, and the stall is over.
async fn accept_and_resume(
    setup: &Setup,
    config: &Path,
    old_log: &[schemas::Event],
    new_log: &[schemas::Event],
    _broker: &MockCluster<'static, DefaultProducerContext>,
) {
    let mut accept = Cluster::start_with(&setup.dir, config, 1, 1, &["--accept-new-log"]);
    assert_eq!(
        wait_for_exit(&mut accept, Duration::from_secs(60)),
        Some(0),
        "logs:\n{}",
        accept.logs()
    );
    assert_eq!(
        setup
            .count(&format!("SELECT count() FROM ({OPEN_STALLS})"))
            .await,
        0
    );
    let mut cluster = Cluster::start(&setup.dir, config, 1);
    wait_until_checkpointed(
        &setup.clickhouse,
        &setup.database,
        new_log.len(),
        &mut cluster,
    )
    .await;
    assert_eq!(setup.stored(new_log).await, distinct(new_log));
    assert_eq!(
        setup.stored(old_log).await,
        distinct(old_log),
        "earlier results kept"
    );
    let progress = get(router(setup.gateway()), "/api/progress", Some("rk_acme")).await;
    assert!(progress.contains("\"stalled\":null"), "{progress}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_new_log_stalls_the_engine() {
    let setup = Setup::new("log_loss_shorter");
    stalls_on(&setup, &events(2, 100), "log_ends_before_checkpoint").await;
    setup
        .clickhouse
        .query(&format!("DROP DATABASE {}", setup.database))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_log_regrown_past_the_checkpoint_stalls_the_engine() {
    let setup = Setup::new("log_loss_regrown");
    stalls_on(&setup, &events(3, 3 * OLD_EVENTS), "other_record_at_offset").await;
    setup
        .clickhouse
        .query(&format!("DROP DATABASE {}", setup.database))
        .await;
}
