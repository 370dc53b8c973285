//! Sessions, identities, enriched events and per-minute aggregates, end to end: a generated
//! log of realistic clickstream (identifies, aliases across devices, out-of-order, late and
//! duplicate events) is produced to the real broker, a two-process engine cluster writes
//! ClickHouse, and every table is compared row by row with the single-threaded reference.
//!
//! The same log runs twice: into Debian's ClickHouse 18.16, and into ClickHouse 26.9 (chdb,
//! `deploy/chdb`), where the engine creates its tables for the modern server, inserts its
//! RowBinary rows and runs its corrections unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::collections::BTreeSet;

use common::chdb::Chdb;
use common::reference::compare_with_reference;
use common::{ClickHouse, Cluster, TestEnv, engine_config, produce, wait_until_checkpointed};
use loadgen::generator::{Generator, GeneratorConfig};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;

const EVENTS: usize = 12_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_identities_and_aggregates_match_the_reference() {
    let env = TestEnv::new("analytics").await;
    let differences = run_against_reference(env).await;
    assert_eq!(differences, 0, "ClickHouse differs from the reference");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_clickhouse_26_the_tables_match_the_reference() {
    let mut env = TestEnv::new("analytics26").await;
    let chdb = Chdb::start("analytics", None, None);
    env.clickhouse = ClickHouse {
        url: chdb.url.clone(),
        http: reqwest::Client::new(),
    };
    let modern = env.clickhouse.query("SELECT version()").await;
    assert!(modern.starts_with("26."), "chdb reports {modern}");
    let differences = run_against_reference(env).await;
    let report = chdb.report(&reqwest::Client::new()).await;
    println!(
        "the engine and the comparison ran {} statements on ClickHouse 26",
        report["served"]
    );
    assert_eq!(
        differences,
        0,
        "ClickHouse 26 differs from the reference; chdb's log:\n{}",
        chdb.log()
    );
}

/// Produces the log, runs a two-process cluster into `env`'s ClickHouse and compares every
/// table with the reference, then erases a person and compares again; returns the number of
/// rows that differ, both times.
async fn run_against_reference(env: TestEnv) -> usize {
    let TestEnv {
        brokers,
        clickhouse,
        topic,
        database,
        dir,
    } = env;

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
    rollups_agree_with_raw_rows(&clickhouse.url, &database).await;

    // Erasure on this server: the most active person of acme goes (the executor's mutations
    // and its recount of the rollups), and every table equals the reference on the log
    // without them.
    let erased = common::most_active_person(
        log.iter()
            .filter(|record| record.event.tenant == "acme")
            .map(|record| {
                let event = &record.event;
                [
                    event.anonymous_id.clone(),
                    event.user_id.clone(),
                    event.previous_id.clone(),
                ]
            })
            .collect(),
    );
    let request = "analytics-erasure";
    common::request_erasure(
        &brokers,
        &format!("{topic}_control"),
        request,
        "acme",
        &erased,
    )
    .await;
    common::wait_for_erasure(&clickhouse, &database, request, &mut cluster).await;
    let kept = common::without_person(&log, "acme", &erased);
    println!(
        "erased {} ids ({} of {} events); every table against the reference without them:",
        erased.len(),
        log.len() - kept.len(),
        log.len()
    );
    assert!(kept.len() < log.len(), "the erased person had events");
    let (after_erasure, _) = compare_with_reference(&clickhouse, &database, &kept).await;

    drop(cluster);
    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    differences + after_erasure
}

/// The same questions over the raw rows and, for a tenant whose retention puts the range
/// before its raw rows, over the per-minute rollups: the engine's two outputs and the query
/// compiler's two paths give the same numbers. Over rollups, a filter or a metric they do not
/// hold is a 400 that names the retention.
async fn rollups_agree_with_raw_rows(url: &str, database: &str) {
    let state = |retention: &str| {
        let tenants = schemas::tenants::Tenants::parse(&format!(
            "[[tenants]]\nid = \"acme\"\nwrite_keys = [\"w\"]\nread_keys = [\"r\"]\n{retention}"
        ))
        .unwrap();
        std::sync::Arc::new(query_gateway::AppState::offline(tenants, url, database))
    };
    let (raw, rollups) = (state(""), state("retention_days = 1\n"));
    let metrics = [
        "pageviews",
        "events",
        "visits",
        "bounce_rate",
        "visit_duration",
    ];
    for (zone, dimensions) in [
        ("UTC", vec![]),
        ("UTC", vec!["time:hour"]),
        ("Asia/Kathmandu", vec!["time:day"]),
    ] {
        let body = serde_json::json!({
            "site_id": "acme", "metrics": metrics, "dimensions": dimensions,
            "date_range": ["2023-11-13", "2023-11-16"], "timezone": zone,
        });
        let (raw_status, raw_answer) = query_v2(&raw, &body).await;
        let (status, answer) = query_v2(&rollups, &body).await;
        assert_eq!(
            (raw_status, status),
            (200, 200),
            "{body}: {raw_answer} / {answer}"
        );
        assert!(
            raw_answer["results"]
                .as_array()
                .is_some_and(|rows| !rows.is_empty())
        );
        assert_eq!(
            answer["results"], raw_answer["results"],
            "rollups differ from raw rows: {body}"
        );
    }
    let old = serde_json::json!(["2023-11-13", "2023-11-16"]);
    for refused in [
        serde_json::json!({"site_id": "acme", "metrics": ["visitors"], "date_range": old}),
        serde_json::json!({"site_id": "acme", "metrics": ["pageviews"], "date_range": old,
            "filters": [["is", "event:page", ["/"]]]}),
        serde_json::json!({"site_id": "acme", "metrics": ["pageviews"], "date_range": old,
            "dimensions": ["event:page"]}),
    ] {
        let (status, answer) = query_v2(&rollups, &refused).await;
        assert_eq!(status, 400, "{refused}: {answer}");
        assert!(answer.to_string().contains("retention_days"), "{answer}");
    }
    // "all" starts where the raw rows start.
    let all = serde_json::json!({"site_id": "acme", "metrics": ["visitors"], "date_range": "all"});
    let (status, answer) = query_v2(&rollups, &all).await;
    assert_eq!(status, 200, "{answer}");
}

async fn query_v2(
    state: &std::sync::Arc<query_gateway::AppState>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    use tower::ServiceExt;
    let request = axum::http::Request::post("/api/v2/query")
        .header("authorization", "Bearer r")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = query_gateway::router(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}
