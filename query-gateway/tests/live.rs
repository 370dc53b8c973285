//! `GET /live` over a real socket, fed through real Redis pub/sub in the engine's message
//! format: a tenant's stream carries its counters and nobody else's, `Last-Event-ID` resumes
//! without repeating what the browser has, and keys are checked like everywhere else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

use clickstream_query_gateway::ask::run::{RunLimits, Runner};
use clickstream_query_gateway::ask::{AskLimits, AskService};
use clickstream_query_gateway::metrics::Metrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickstream_query_gateway::live::LiveHub;
use clickstream_query_gateway::{AppState, router};
use schemas::live::{LiveUpdate, channel};
use schemas::tenants::Tenants;

fn redis_url() -> String {
    std::env::var("CLICKSTREAM_REDIS_URL").unwrap_or_else(|_| {
        panic!("CLICKSTREAM_REDIS_URL is not set: run the tests with deploy/test.sh, which starts Redis")
    })
}

fn publish(connection: &mut redis::Connection, tenant: &str, update: &LiveUpdate) {
    redis::cmd("PUBLISH")
        .arg(channel(tenant))
        .arg(serde_json::to_string(update).unwrap())
        .query::<i64>(connection)
        .unwrap_or_else(|e| panic!("Redis PUBLISH failed: {e}"));
}

fn counters(epoch: u64, active: i64) -> LiveUpdate {
    LiveUpdate {
        epoch,
        at_ms: chrono::Utc::now().timestamp_millis(),
        active_visitors: Some(active),
        events: Some(10),
    }
}

/// Reads SSE text from `response` until `done` says the text so far is enough.
async fn read_until(response: &mut reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&text) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "stream ended or stalled; got:\n{text}");
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => panic!("stream closed; got:\n{text}"),
            Ok(Err(error)) => panic!("stream failed: {error}; got:\n{text}"),
            Err(_) => panic!("nothing more within 10 s; got:\n{text}"),
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_counters_stream_per_tenant_and_resume_by_last_event_id() {
    let redis_url = redis_url();
    let live = Arc::new(LiveHub::default());
    live.follow_redis(redis_url.clone());
    let metrics = Arc::new(Metrics::default());
    let state = Arc::new(AppState {
        tenants: Tenants::parse(
            "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\nread_keys=['rk_acme']\n\
             [[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nread_keys=['rk_globex']\n",
        )
        .unwrap()
        .into(),
        // /live never touches ClickHouse.
        clickhouse: clickhouse::Client::default().with_url("http://127.0.0.1:9"),
        live: live.clone(),
        live_stream_lifetime: Duration::from_secs(60),
        ask: Arc::new(AskService::new(
            Runner::new("http://127.0.0.1:9", "none", RunLimits::default()),
            None,
            schemas::version::ServerVersion::OLDEST,
            AskLimits::default(),
            metrics.clone(),
        )),
        metrics,
        clock: Default::default(),
        erasure: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, router(state)).into_future());
    let http = reqwest::Client::new();
    let mut redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_connection()
        .unwrap_or_else(|e| panic!("Redis at {redis_url}: {e}"));

    // The hub subscribes asynchronously: publish until it has the first message.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.latest("acme").is_none() {
        assert!(
            Instant::now() < deadline,
            "the hub never received a Redis message"
        );
        publish(&mut redis, "acme", &counters(5, 7));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut acme = http
        .get(format!("http://{address}/live?key=rk_acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(acme.status(), 200);
    assert_eq!(
        acme.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let first = read_until(&mut acme, |text| text.contains("\n\n")).await;
    assert!(first.contains("event: counters"), "{first}");
    assert!(first.contains("id: 5"), "{first}");
    assert!(first.contains(r#""active_visitors":7"#), "{first}");

    // Another tenant's counters never reach acme's stream; acme's next ones do.
    publish(&mut redis, "globex", &counters(6, 99));
    publish(&mut redis, "acme", &counters(6, 8));
    let next = read_until(&mut acme, |text| text.contains("id: 6")).await;
    assert!(next.contains(r#""active_visitors":8"#), "{next}");
    assert!(
        !next.contains(r#""active_visitors":99"#),
        "acme saw globex's counters: {next}"
    );
    drop(acme);

    // A browser that already has epoch 6 is not sent it again on reconnect...
    let mut resumed = http
        .get(format!("http://{address}/live?key=rk_acme"))
        .header("Last-Event-ID", "6")
        .send()
        .await
        .unwrap();
    publish(&mut redis, "acme", &counters(7, 9));
    let text = read_until(&mut resumed, |text| text.contains("\n\n")).await;
    assert!(
        text.contains("id: 7") && !text.contains("id: 6"),
        "resumed stream starts after the last seen epoch: {text}"
    );
    // ...while one that is behind gets the current state at once.
    let mut behind = http
        .get(format!("http://{address}/live"))
        .bearer_auth("rk_acme")
        .header("Last-Event-ID", "3")
        .send()
        .await
        .unwrap();
    let text = read_until(&mut behind, |text| text.contains("\n\n")).await;
    assert!(text.contains("id: 7"), "{text}");

    for (url, status) in [
        (format!("http://{address}/live"), 401),
        (format!("http://{address}/live?key=wk_acme"), 401),
        (
            format!("http://{address}/live?key=rk_acme&tenant=globex"),
            400,
        ),
    ] {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), status, "{url}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    server.abort();
}
