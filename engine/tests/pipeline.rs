//! End to end on real servers: HTTP into the ingest gateway, the real broker (tansu, started by
//! `deploy/test.sh`), a two-process engine cluster of the built binary, ClickHouse.
//!
//! Needs `CLICKSTREAM_KAFKA_BROKERS` and `CLICKSTREAM_CLICKHOUSE_URL`; it fails, never skips,
//! when they are missing or unreachable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

mod common;

use common::{
    Cluster, PARTITIONS, TestEnv, engine_config, read_log, start_gateway, wait_until_checkpointed,
};

/// Collects every live update the engine publishes for `tenant`.
async fn subscribe_live(
    tenant: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<schemas::live::LiveUpdate>>> {
    use futures_util::StreamExt as _;
    let url =
        std::env::var("CLICKSTREAM_REDIS_URL").expect("CLICKSTREAM_REDIS_URL (deploy/test.sh)");
    let mut pubsub = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_async_pubsub()
        .await
        .unwrap_or_else(|e| panic!("Redis at {url}: {e}"));
    pubsub
        .subscribe(schemas::live::channel(tenant))
        .await
        .expect("subscribe");
    let updates = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = updates.clone();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let update = serde_json::from_slice(message.get_payload_bytes()).expect("LiveUpdate");
            sink.lock().expect("live updates").push(update);
        }
    });
    updates
}

/// A page/track/identify/alias/screen/group mix, every event with a known messageId.
fn generated_batch(request: usize, size: usize) -> Vec<Value> {
    (0..size)
        .map(|position| {
            let n = request * size + position;
            let visitor = format!("visitor-{}", n % 37);
            let id = format!("e2e-{n}");
            match n % 6 {
                0 | 1 => json!({"type": "page", "messageId": id, "anonymousId": visitor, "name": "Docs",
                                "properties": {"path": format!("/docs/{}", n % 5), "referrer": "https://search.example/"}}),
                2 => json!({"type": "track", "messageId": id, "anonymousId": visitor, "event": "Clicked",
                            "properties": {"button": "buy", "n": n}}),
                3 => json!({"type": "identify", "messageId": id, "anonymousId": visitor, "userId": format!("user-{}", n % 11),
                            "traits": {"plan": "pro"}}),
                4 => json!({"type": "screen", "messageId": id, "userId": format!("user-{}", n % 11), "name": "Home"}),
                _ => json!({"type": "alias", "messageId": id, "previousId": visitor, "userId": format!("user-{}", n % 11)}),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_from_http_to_clickhouse_exactly_once() {
    let TestEnv {
        brokers,
        clickhouse,
        topic,
        database,
        dir,
    } = TestEnv::new("e2e").await;
    let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    // The engine's live counters, as the query gateway would receive them.
    let live = subscribe_live("e2e").await;
    let mut cluster = Cluster::start(&dir, &config, 2);

    // The gateway, in-process, served over a real socket.
    let (gateway, server) = start_gateway(
        &brokers,
        &topic,
        "[[tenants]]\nid='e2e'\nwrite_keys=['wk_e2e']\n",
    )
    .await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("http://{gateway}{path}"))
            .basic_auth("wk_e2e", Some(""))
            .json(&body)
            .send()
    };

    // Good traffic: 40 batches of 50 and a few single calls.
    let mut expected = 0;
    let mut expected_by_type: BTreeMap<String, usize> = BTreeMap::new();
    // Visitors of activity events (everything but alias), for the live counter.
    let mut active_visitors: std::collections::BTreeSet<String> = ["clock-fast".to_owned()].into();
    for request in 0..40 {
        let batch = generated_batch(request, 50);
        for event in &batch {
            if event["type"] != "alias" {
                let visitor = event
                    .get("anonymousId")
                    .or(event.get("userId"))
                    .and_then(Value::as_str)
                    .expect("id");
                active_visitors.insert(visitor.to_owned());
            }
            *expected_by_type
                .entry(event["type"].as_str().expect("type").to_owned())
                .or_default() += 1;
        }
        let response = post("/v1/batch", json!({"batch": batch}))
            .await
            .expect("post");
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        expected += 50;
    }
    let before = chrono::Utc::now().timestamp_millis();
    let skewed = json!({"messageId": "skewed", "anonymousId": "clock-fast", "event": "Skewed",
                        "timestamp": "2099-01-01T00:00:00Z", "sentAt": "2099-01-01T00:00:10Z",
                        "context": {"ip": "203.0.113.99", "campaign": {"source": "newsletter"}},
                        "properties": {"answer": 42, "nested": {"a": [1, 2]}}});
    assert_eq!(post("/v1/track", skewed).await.expect("post").status(), 200);
    let after = chrono::Utc::now().timestamp_millis();
    expected += 1;
    *expected_by_type.entry("track".to_owned()).or_default() += 1;

    // Bad traffic: none of it may reach the events; a bad event costs only itself.
    let mixed_batch = json!({"batch": [
        {"type": "page", "messageId": "kept-0", "anonymousId": "a"},
        {"type": "track", "messageId": "rejected-1", "anonymousId": "a"}
    ]});
    let response = post("/v1/batch", mixed_batch).await.expect("post");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["refused"][0]["index"], 1, "{body}");
    assert_eq!(body["refused"][0]["messageId"], "rejected-1", "{body}");
    expected += 1;
    *expected_by_type.entry("page".to_owned()).or_default() += 1;
    active_visitors.insert("a".to_owned());
    // The refusal is a record of the topic too (for `ingestion_warnings`), not an event.
    let warning_records = 1;
    let unauthorized = http
        .post(format!("http://{gateway}/v1/page"))
        .basic_auth("wk_wrong", Some(""))
        .json(&json!({"messageId": "rejected-2", "anonymousId": "a"}))
        .send()
        .await
        .expect("post");
    assert_eq!(unauthorized.status(), 401);
    let malformed = http
        .post(format!("http://{gateway}/v1/track"))
        .basic_auth("wk_e2e", Some(""))
        .body("{\"messageId\": \"rejected-3\", ")
        .send()
        .await
        .expect("post");
    assert_eq!(malformed.status(), 400);

    // Wait until the checkpoints cover every accepted event: every sink has written them.
    wait_until_checkpointed(&clickhouse, &database, expected, &mut cluster).await;
    // Let one more epoch pass: a duplicate would show up now.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    operator_metrics_are_current(&cluster).await;

    let totals = &clickhouse
        .rows(&format!(
            "SELECT count() AS rows, uniqExact(message_id) AS ids, countIf(message_id LIKE 'rejected-%') AS rejected \
             FROM {database}.events FINAL"
        ))
        .await[0];
    assert_eq!(totals["rows"], json!(expected.to_string()), "{totals}");
    assert_eq!(
        totals["ids"],
        json!(expected.to_string()),
        "every event exactly once: {totals}"
    );
    assert_eq!(totals["rejected"], json!("0"), "{totals}");

    let by_type: BTreeMap<String, usize> = clickhouse
        .rows(&format!(
            "SELECT type, count() AS n FROM {database}.events FINAL GROUP BY type"
        ))
        .await
        .into_iter()
        .map(|row| {
            let n = row["n"].as_str().expect("n").parse().expect("number");
            (row["type"].as_str().expect("type").to_owned(), n)
        })
        .collect();
    assert_eq!(by_type.len(), 5, "all kinds present: {by_type:?}");
    assert_eq!(by_type, expected_by_type);

    let skewed = &clickhouse
        .rows(&format!(
            "SELECT tenant, name, anonymous_id, event_time_ms, ip, utm_source, properties.key AS keys, \
             properties.value AS values FROM {database}.events FINAL WHERE message_id = 'skewed'"
        ))
        .await[0];
    assert_eq!(skewed["tenant"], "e2e");
    assert_eq!(skewed["name"], "Skewed");
    assert_eq!(skewed["ip"], "203.0.113.0");
    assert_eq!(skewed["utm_source"], "newsletter");
    assert_eq!(skewed["keys"], json!(["answer", "nested"]));
    assert_eq!(skewed["values"], json!(["42", "{\"a\":[1,2]}"]));
    let event_time: i64 = skewed["event_time_ms"]
        .as_str()
        .expect("ms")
        .parse()
        .expect("number");
    assert!(
        (before - 10_000..=after - 10_000).contains(&event_time),
        "a client clock far in the future is corrected to 10 s before receipt: {event_time} not in [{}, {}]",
        before - 10_000,
        after - 10_000
    );

    let page = &clickhouse
        .rows(&format!("SELECT type, name, path, referrer, anonymous_id FROM {database}.events FINAL WHERE message_id = 'e2e-7'"))
        .await[0];
    assert_eq!(
        page,
        &json!({"type": "page", "name": "Docs", "path": "/docs/2", "referrer": "https://search.example/", "anonymous_id": "visitor-7"})
    );

    // Every event happened within the last five minutes: all its visitors are active.
    let active: usize = clickhouse
        .query(&format!(
            "SELECT value FROM {database}.live_counters FINAL WHERE tenant = 'e2e' AND counter = 'active_visitors_5m'"
        ))
        .await
        .trim()
        .parse()
        .expect("live counter");
    assert_eq!(
        active,
        active_visitors.len(),
        "active visitors in the last five minutes"
    );
    // ...and the same went out over Redis, with the events written per epoch.
    let updates = live.lock().expect("live updates").clone();
    let published_events: u64 = updates.iter().filter_map(|u| u.events).sum();
    assert!(
        published_events >= expected as u64,
        "{published_events} events published live, {expected} written: {updates:?}"
    );
    let newest_active = updates
        .iter()
        .filter(|u| u.active_visitors.is_some())
        .max_by_key(|u| u.epoch)
        .and_then(|u| u.active_visitors);
    assert_eq!(newest_active, Some(active as i64), "live active visitors");

    // Exactly the accepted events are in Kafka, each once.
    let mut in_topic: Vec<String> = read_log(&brokers, &topic, expected)
        .into_iter()
        .map(|record| record.event.message_id.clone())
        .collect();
    in_topic.sort();
    let total = in_topic.len();
    in_topic.dedup();
    assert_eq!(
        (total, in_topic.len()),
        (expected, expected),
        "records in the topic (all, distinct)"
    );
    assert!(
        !in_topic.iter().any(|id| id.starts_with("rejected-")),
        "a rejected event reached Kafka"
    );

    // Checkpoints cover every record, the refusal's too: a restart would read nothing twice
    // that counts.
    let checkpointed: usize = clickhouse
        .query(&format!(
            "SELECT sum(next) FROM (SELECT partition, max(next_offset) AS next FROM {database}._checkpoints GROUP BY partition)"
        ))
        .await
        .trim()
        .parse()
        .expect("sum");
    assert_eq!(checkpointed, expected + warning_records);
    let partitions: i32 = clickhouse
        .query(&format!(
            "SELECT uniqExact(partition) FROM {database}._checkpoints"
        ))
        .await
        .trim()
        .parse()
        .expect("count");
    assert_eq!(
        partitions, PARTITIONS,
        "both processes checkpointed their partitions"
    );

    server.abort();
    drop(cluster);
    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the operator watches, once everything is checkpointed: each partition has a consumer
/// lag (librdkafka's statistics arrive every 5 s) and it is zero, every process reports its
/// checkpoint age, and the process that writes `_progress` reports how far "complete up to"
/// trails now.
async fn operator_metrics_are_current(cluster: &Cluster) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = String::new();
        for address in &cluster.metrics {
            let text = http
                .get(format!("http://{address}/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text");
            all.push_str(&text);
        }
        let samples = |prefix: &str| -> Vec<f64> {
            all.lines()
                .filter(|line| line.starts_with(prefix))
                .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
                .collect()
        };
        let lags = samples("clickstream_engine_consumer_lag{");
        let ages = samples("clickstream_engine_checkpoint_age_seconds ");
        let completeness = samples("clickstream_engine_complete_until_lag_seconds ");
        let ready = !lags.is_empty()
            && lags.iter().all(|lag| *lag == 0.0)
            && ages.len() == cluster.processes()
            && ages.iter().all(|age| (0.0..600.0).contains(age))
            && completeness.iter().any(|lag| *lag > 0.0 && *lag < 600.0);
        if ready {
            println!(
                "consumer lag {lags:?}; checkpoint ages {ages:?} s; complete-until lag {completeness:?} s"
            );
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "operator metrics not current after 30 s: consumer lag {lags:?}, checkpoint ages {ages:?}, complete-until lag {completeness:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
