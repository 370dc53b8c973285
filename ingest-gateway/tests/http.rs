//! The gateway's HTTP contract, driven through `router` in-process and over a real socket,
//! against librdkafka's mock cluster (a real Kafka-protocol broker running inside librdkafka).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clickstream_ingest_gateway::kafka::{EventProducer, KafkaConfig};
use clickstream_ingest_gateway::segment::Limits;
use clickstream_ingest_gateway::{AppState, metrics_router, router};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::tenants::Tenants;
use schemas::{Event, EventKind};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 3;

struct Harness {
    cluster: MockCluster<'static, DefaultProducerContext>,
    state: Arc<AppState>,
}

fn harness(message_timeout_ms: u64) -> Harness {
    harness_with(message_timeout_ms, false)
}

fn harness_with(message_timeout_ms: u64, trust_forwarded_for: bool) -> Harness {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(TOPIC, PARTITIONS, 1)
        .expect("create topic");
    let tenants = Tenants::parse(
        "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\ndomains=['acme.example']\n\
         [[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nanonymize_ip=false\ndomains=['globex.example']\n",
    )
    .expect("tenants");
    let producer = EventProducer::new(&KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        topic: TOPIC.into(),
        message_timeout_ms,
        queue_max_messages: 10_000,
        linger_ms: 2,
    })
    .expect("producer");
    let state = Arc::new(AppState {
        tenants,
        producer,
        limits: Limits::default(),
        trust_forwarded_for,
        retry_after_secs: 7,
        metrics: Default::default(),
        rate_limiter: clickstream_ingest_gateway::ratelimit::RateLimiter::local(),
        enricher: ENRICHER.clone(),
        salts: clickstream_ingest_gateway::salt::Salts::local(),
    });
    Harness { cluster, state }
}

impl Harness {
    async fn post(
        &self,
        path: &str,
        auth: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = auth {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
            request = request.header(header::AUTHORIZATION, format!("Basic {encoded}"));
        }
        let response = router(self.state.clone())
            .oneshot(request.body(body.into()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, body)
    }

    /// Every event in the topic, read from the beginning of each partition.
    fn consume_all(&self) -> Vec<(String, Event)> {
        self.consume_records()
            .into_iter()
            .filter_map(|(key, record)| match record {
                schemas::Record::Event(event) => Some((key, event)),
                schemas::Record::Warning(_) => None,
            })
            .collect()
    }

    /// Every warning in the topic.
    fn warnings(&self) -> Vec<schemas::IngestWarning> {
        self.consume_records()
            .into_iter()
            .filter_map(|(_, record)| match record {
                schemas::Record::Warning(warning) => Some(warning),
                schemas::Record::Event(_) => None,
            })
            .collect()
    }

    /// Every record in the topic, read from the beginning of each partition.
    fn consume_records(&self) -> Vec<(String, schemas::Record)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.cluster.bootstrap_servers())
            .set("group.id", "verifier")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut total = 0;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            let (_, high) = consumer
                .fetch_watermarks(TOPIC, partition, Duration::from_secs(5))
                .expect("watermarks");
            total += high;
            assignment
                .add_partition_offset(TOPIC, partition, Offset::Beginning)
                .expect("offset");
        }
        consumer.assign(&assignment).expect("assign");
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while (events.len() as i64) < total {
            assert!(
                Instant::now() < deadline,
                "read {} of {total} records",
                events.len()
            );
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                let message = message.expect("record");
                let key =
                    String::from_utf8(message.key().expect("key").to_vec()).expect("utf8 key");
                let event =
                    schemas::wire::decode(message.payload().expect("payload")).expect("decodes");
                events.push((key, event));
            }
        }
        events
    }
}

/// The enricher over the set-up's GeoIP files (`deploy/test.sh` installs them and sets
/// `CLICKSTREAM_GEOIP`), loaded once for every harness of this binary.
static ENRICHER: std::sync::LazyLock<Arc<clickstream_ingest_gateway::enrich::Enricher>> =
    std::sync::LazyLock::new(|| {
        let geoip = std::env::var("CLICKSTREAM_GEOIP").expect(
            "CLICKSTREAM_GEOIP is not set: run the tests through deploy/test.sh, which installs the GeoIP database",
        );
        let config = clickstream_ingest_gateway::enrich::EnrichConfig {
            ua_regexes: None,
            geoip: geoip.split(',').map(std::path::PathBuf::from).collect(),
        };
        Arc::new(
            clickstream_ingest_gateway::enrich::Enricher::load(&config)
                .expect("enrichment rules and the GeoIP database"),
        )
    });

fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn single_event_is_acknowledged_and_lands_in_kafka() {
    let h = harness(5_000);
    let (status, _, body) = h
        .post(
            "/v1/track",
            Some("wk_acme"),
            json!({"messageId": "m-1", "anonymousId": "anon-1", "event": "Signed Up",
                   "properties": {"plan": "pro"}, "timestamp": "2024-05-01T12:00:00Z"})
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"success": true}));

    let events = h.consume_all();
    assert_eq!(events.len(), 1);
    let (key, event) = &events[0];
    assert_eq!(key, "acme:anon-1");
    assert_eq!(event.tenant, "acme");
    assert_eq!(event.message_id, "m-1");
    assert_eq!(event.kind, EventKind::Track);
    assert_eq!(event.name, "Signed Up");
    assert_eq!(event.timestamp_ms, 1_714_564_800_000);
    assert_eq!(
        event.properties,
        vec![("plan".to_owned(), "pro".to_owned())]
    );
}

#[tokio::test]
async fn write_key_in_body_and_every_route() {
    let h = harness(5_000);
    let bodies = [
        (
            "/v1/track",
            json!({"writeKey": "wk_globex", "userId": "u", "event": "e"}),
        ),
        (
            "/v1/page",
            json!({"writeKey": "wk_globex", "anonymousId": "a", "name": "Home"}),
        ),
        (
            "/v1/screen",
            json!({"writeKey": "wk_globex", "anonymousId": "a", "name": "Main"}),
        ),
        (
            "/v1/identify",
            json!({"writeKey": "wk_globex", "anonymousId": "a", "userId": "u", "traits": {"email": "x@y.z"}}),
        ),
        (
            "/v1/alias",
            json!({"writeKey": "wk_globex", "previousId": "a", "userId": "u"}),
        ),
        (
            "/v1/group",
            json!({"writeKey": "wk_globex", "userId": "u", "groupId": "g"}),
        ),
        (
            "/v1/import",
            json!({"writeKey": "wk_globex", "batch": [{"type": "page", "anonymousId": "b"}]}),
        ),
    ];
    for (path, body) in bodies {
        let (status, _, response) = h.post(path, None, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{path}: {response}");
    }
    let events = h.consume_all();
    assert_eq!(events.len(), 7);
    assert!(events.iter().all(|(_, event)| event.tenant == "globex"));
    let mut kinds: Vec<_> = events
        .iter()
        .map(|(_, event)| event.kind.as_str())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "alias", "group", "identify", "page", "page", "screen", "track"
        ]
    );
}

/// Issue 20: a batch of five where one track lacks `event` stored none of the four good
/// events, and analytics.js does not retry a 400. Each event now stands alone.
#[tokio::test]
async fn a_bad_event_costs_only_itself_and_is_named_and_recorded() {
    let h = harness(5_000);
    let batch = json!({"batch": [
        {"type": "track", "anonymousId": "a", "event": "ok", "messageId": "good-0"},
        {"type": "track", "anonymousId": "a", "messageId": "bad-1"},
        {"type": "page", "anonymousId": "a", "messageId": "good-2"},
        {"type": "teleport", "anonymousId": "a"},
        "not an object",
        {"type": "page", "userId": "u", "messageId": "good-5", "timestamp": "last tuesday"},
        {"type": "identify", "userId": "u", "messageId": "good-6"}
    ]});
    let (status, _, body) = h
        .post("/v1/batch", Some("wk_acme"), batch.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["accepted"], 4);
    let refused: Vec<(u64, Value, Vec<String>)> = body["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .map(|r| {
            let fields = r["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|e| e["field"].as_str().expect("field").to_owned())
                .collect();
            (
                r["index"].as_u64().expect("index"),
                r["messageId"].clone(),
                fields,
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            (1, json!("bad-1"), vec!["event".to_owned()]),
            (3, Value::Null, vec!["type".to_owned()]),
            (4, Value::Null, vec!["".to_owned()]),
        ]
    );
    let mut stored: Vec<String> = h
        .consume_all()
        .into_iter()
        .map(|(_, event)| event.message_id)
        .collect();
    stored.sort();
    assert_eq!(stored, ["good-0", "good-2", "good-5", "good-6"]);

    let mut warnings: Vec<(String, String, String)> = h
        .warnings()
        .into_iter()
        .map(|w| {
            assert_eq!(w.tenant, "acme");
            assert!(!w.detail.is_empty(), "{w:?}");
            let id = if w.message_id.starts_with("bad") || w.message_id.starts_with("good") {
                w.message_id
            } else {
                // Made up for an event that had none: a UUIDv7.
                let id = uuid::Uuid::parse_str(&w.message_id).expect("a generated id");
                assert_eq!(id.get_version_num(), 7);
                "generated".to_owned()
            };
            (w.kind.as_str().to_owned(), id, w.field)
        })
        .collect();
    warnings.sort();
    assert_eq!(
        warnings,
        [
            (
                "invalid_time_ignored".into(),
                "good-5".into(),
                "timestamp".into()
            ),
            ("refused_event".into(), "bad-1".into(), "event".into()),
            ("refused_event".into(), "generated".into(), "".into()),
            ("refused_event".into(), "generated".into(), "type".into()),
        ]
    );
    let metrics = h.state.metrics.render();
    assert!(
        metrics.contains("clickstream_ingest_events_refused_total{field=\"event\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("clickstream_ingest_fields_ignored_total{kind=\"invalid_time_ignored\"} 1")
    );
}

/// A batch of nothing but bad events is still a batch: 200, everything named, nothing stored.
#[tokio::test]
async fn a_batch_of_only_bad_events_is_answered_event_by_event() {
    let h = harness(5_000);
    let batch = json!({"batch": [{"type": "track", "anonymousId": "a"}, 7]});
    let (status, _, body) = h
        .post("/v1/batch", Some("wk_acme"), batch.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["refused"].as_array().map(Vec::len), Some(2));
    assert!(h.consume_all().is_empty());
    assert_eq!(h.warnings().len(), 2);
}

/// Every time form a real SDK sends is read, and one that is not a time costs the time only.
#[tokio::test]
async fn sdk_time_forms_are_read_and_a_bad_time_keeps_the_event() {
    let h = harness(5_000);
    // 2026-12-02T10:00:00Z = 1_796_205_600_000 ms.
    let at = 1_796_205_600_000i64;
    let forms = [
        ("2026-12-02T10:00:00+0000", at),
        ("2026-12-02T15:30:00+0530", at),
        ("2026-12-02T15:30:00+05:30", at),
        ("2026-12-02T02:00:00-0800", at),
        ("2026-12-02T15:00:00+05", at),
        ("2026-12-02T10:00:00.123456789Z", at + 123),
        ("2026-12-02T10:00:00.1234567Z", at + 123),
        ("2026-12-02T10:00:00,5Z", at + 500),
        ("2026-12-02t10:00:00z", at),
        ("2026-12-02 10:00:00+00:00", at),
        ("2026-12-02T10:00Z", at),
        ("20261202T100000Z", at),
        ("2026-12-02T11:00:00+01:00[Europe/Paris]", at),
        ("2026-12-02T10:00:00", at),
        ("2026-12-02T10:00:00.250", at + 250),
        ("2026-12-02T11:00:00[Europe/Paris]", at),
    ];
    let batch: Vec<Value> = forms
        .iter()
        .enumerate()
        .map(|(i, (time, _))| {
            json!({"type": "track", "event": "e", "anonymousId": "a", "messageId": format!("t{i}"), "timestamp": time})
        })
        .collect();
    let (status, _, body) = h
        .post(
            "/v1/batch",
            Some("wk_acme"),
            json!({"batch": batch}).to_string(),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"success": true})));
    let events = h.consume_all();
    for (i, (time, expected)) in forms.iter().enumerate() {
        let event = events
            .iter()
            .find(|(_, e)| e.message_id == format!("t{i}"))
            .map(|(_, e)| e)
            .expect("stored");
        assert_eq!(event.timestamp_ms, *expected, "{time}");
    }
    assert!(h.warnings().is_empty());
}

#[tokio::test]
async fn limits_are_enforced_with_json_errors() {
    let h = harness(5_000);
    let limits = Limits::default();

    let big_property = "x".repeat(limits.max_event_bytes);
    let (status, _, body) = h
        .post(
            "/v1/track",
            Some("wk_acme"),
            json!({"anonymousId": "a", "event": "e", "properties": {"p": big_property}})
                .to_string(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large")
    );

    let huge = json!({"batch": [{"type": "page", "anonymousId": "a", "properties": {"p": "y".repeat(limits.max_request_bytes)}}]});
    let (status, _, body) = h.post("/v1/batch", Some("wk_acme"), huge.to_string()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );

    let many: Vec<Value> = (0..=limits.max_batch_events)
        .map(|_| json!({"type": "page", "anonymousId": "a"}))
        .collect();
    let (status, _, body) = h
        .post(
            "/v1/batch",
            Some("wk_acme"),
            json!({"batch": many}).to_string(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large")
    );

    let oversized_member = json!({"batch": [
        {"type": "page", "anonymousId": "a"},
        {"type": "page", "anonymousId": "a", "properties": {"p": "z".repeat(limits.max_event_bytes)}}
    ]});
    let (status, _, body) = h
        .post("/v1/batch", Some("wk_acme"), oversized_member.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1, "the other event is kept");
    assert_eq!(body["refused"][0]["index"], 1);

    let (status, _, body) = h.post("/v1/track", Some("wk_acme"), "{not json").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let (status, _, body) = h
        .post(
            "/v1/batch",
            Some("wk_acme"),
            json!({"events": []}).to_string(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("batch"),
        "{body}"
    );

    let stored = h.consume_all();
    assert_eq!(
        stored.len(),
        1,
        "only the good member of the batch with an oversized one"
    );
}

#[tokio::test]
async fn unknown_or_missing_write_key_is_401() {
    let h = harness(5_000);
    let event = json!({"anonymousId": "a", "event": "e"}).to_string();
    let (status, headers, body) = h.post("/v1/track", Some("wk_nobody"), event.clone()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Basic");
    let (status, _, _) = h.post("/v1/track", None, event).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = h.post("/v1/teleport", Some("wk_acme"), "{}").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert!(h.consume_all().is_empty());
}

#[tokio::test]
async fn kafka_down_is_503_with_retry_after_never_200() {
    let h = harness(1_500);
    h.cluster.broker_down(1).expect("broker down");
    let (status, headers, body) = h
        .post(
            "/v1/batch",
            Some("wk_acme"),
            json!({"batch": [{"type": "page", "anonymousId": "a"}]}).to_string(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{body}"
    );
    assert_eq!(headers[header::RETRY_AFTER], "7");
    assert!(
        h.state
            .metrics
            .render()
            .contains("clickstream_ingest_produce_failures_total 1")
    );
}

#[tokio::test]
async fn over_a_real_socket_with_cors_metrics_and_probes() {
    let h = harness(5_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = router(h.state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let base = format!("http://{address}");

    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/batch"))
        .header("Origin", "https://shop.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,anonymousid")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    let allowed = preflight.headers();
    assert_eq!(
        allowed["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(allowed["access-control-allow-credentials"], "true");
    assert_eq!(
        allowed["access-control-allow-headers"], "content-type,anonymousid",
        "RudderStack's JS SDK sends an AnonymousId header"
    );
    assert_eq!(allowed["access-control-max-age"], "86400");

    let response = client
        .post(format!("{base}/v1/page"))
        .basic_auth("wk_acme", Some(""))
        .header("User-Agent", "Mozilla/5.0 (compatible; bingbot/2.0)")
        .json(&json!({"anonymousId": "sock", "name": "Home"}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);

    for (path, expected) in [("/healthz", 200), ("/readyz", 200)] {
        let status = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("probe")
            .status();
        assert_eq!(status, expected, "{path}");
    }
    assert_eq!(
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics on the public port")
            .status(),
        404,
        "metrics are not served on the public, CORS-open port"
    );
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_address = metrics_listener.local_addr().expect("address");
    let metrics_app = metrics_router(h.state.clone());
    let metrics_server =
        tokio::spawn(async move { axum::serve(metrics_listener, metrics_app).await });
    let metrics = client
        .get(format!("http://{metrics_address}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"clickstream_ingest_requests_total{route="page",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("clickstream_ingest_events_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clickstream_ingest_produce_duration_seconds_bucket"),
        "{metrics}"
    );

    metrics_server.abort();
    let events = h.consume_all();
    assert_eq!(events.len(), 1);
    let event = &events[0].1;
    assert_eq!(event.ip, "127.0.0.0", "peer address, anonymised");
    assert!(event.is_bot, "bot user agents are flagged, not dropped");
    server.abort();
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Issue 9: RudderStack's SDKs gzip every batch; the limits apply to what it inflates to.
#[tokio::test]
async fn compressed_bodies_are_read_and_bombs_refused() {
    let h = harness(5_000);
    let batch = json!({"batch": [
        {"type": "track", "messageId": "gz-1", "anonymousId": "a", "event": "Zipped"},
        {"type": "page", "messageId": "gz-2", "anonymousId": "a", "name": "Home"},
    ]});
    let request = Request::post("/v1/batch")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .header(header::AUTHORIZATION, "Basic d2tfYWNtZTo=")
        .body(Body::from(gzip(batch.to_string().as_bytes())))
        .unwrap();
    let response = router(h.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<String> = h
        .consume_all()
        .into_iter()
        .map(|(_, e)| e.message_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"gz-1".to_owned()) && ids.contains(&"gz-2".to_owned()));

    // 20 MB of spaces around a valid batch, compressed to a few KB.
    let mut bomb = b"{\"batch\": [".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 20 * 1024 * 1024));
    bomb.extend(b"], \"writeKey\": \"wk_acme\"}");
    let request = Request::post("/v1/batch")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(&bomb)))
        .unwrap();
    let response = router(h.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let request = Request::post("/v1/batch")
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from("{}"))
        .unwrap();
    let response = router(h.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error_code(&body), "unsupported_encoding");
    assert_eq!(
        h.consume_all().len(),
        2,
        "nothing of a refused request reached Kafka"
    );
}

/// Issue 9: analytics.js posts each call to the type's initial (`/v1/t`, `/v1/p`, ...) and
/// batches to `/v1/b`, as `text/plain` (a beacon needs no preflight) with the write key in
/// the body.
#[tokio::test]
async fn analytics_js_short_routes_and_text_plain_beacons() {
    let h = harness(5_000);
    let routes = [
        ("/v1/t", json!({"event": "Clicked"}), EventKind::Track),
        ("/v1/p", json!({"name": "Home"}), EventKind::Page),
        ("/v1/s", json!({"name": "Feed"}), EventKind::Screen),
        ("/v1/i", json!({"userId": "u1"}), EventKind::Identify),
        (
            "/v1/a",
            json!({"userId": "u1", "previousId": "p"}),
            EventKind::Alias,
        ),
        ("/v1/g", json!({"groupId": "g1"}), EventKind::Group),
    ];
    for (path, mut body, _) in routes.clone() {
        body["anonymousId"] = json!("browser");
        body["writeKey"] = json!("wk_acme");
        body["messageId"] = json!(path);
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = router(h.state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let batch = json!({"writeKey": "wk_acme", "batch": [
        {"type": "track", "messageId": "/v1/b", "anonymousId": "browser", "event": "Batched"}
    ]});
    let request = Request::post("/v1/b")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(batch.to_string()))
        .unwrap();
    assert_eq!(
        router(h.state.clone())
            .oneshot(request)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let kinds: std::collections::BTreeMap<String, EventKind> = h
        .consume_all()
        .into_iter()
        .map(|(_, e)| (e.message_id, e.kind))
        .collect();
    for (path, _, kind) in routes {
        assert_eq!(kinds.get(path), Some(&kind), "{path}");
    }
    assert_eq!(kinds.get("/v1/b"), Some(&EventKind::Track));
    let (status, _, _) = h.post("/v1/x", Some("wk_acme"), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Issue 9: a string cut inside an emoji (a lone UTF-16 surrogate) costs one character, not
/// the whole batch.
#[tokio::test]
async fn a_lone_surrogate_becomes_a_replacement_character() {
    let h = harness(5_000);
    let body = r#"{"batch": [
        {"type": "track", "messageId": "cut", "anonymousId": "a", "event": "Read", "properties": {"title": "Great news \ud83d"}},
        {"type": "track", "messageId": "whole", "anonymousId": "a", "event": "Read", "properties": {"title": "Great news \ud83d\ude00"}}
    ]}"#;
    let (status, _, response) = h.post("/v1/batch", Some("wk_acme"), body).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let titles: std::collections::BTreeMap<String, String> = h
        .consume_all()
        .into_iter()
        .map(|(_, e)| (e.message_id, e.properties[0].1.clone()))
        .collect();
    assert_eq!(titles["cut"], "Great news \u{fffd}");
    assert_eq!(titles["whole"], "Great news \u{1f600}");
}

/// Issue 20's sibling: the gateway's own proxy headers in the forms proxies write them.
#[tokio::test]
async fn proxy_headers_in_every_form() {
    let h = harness_with(5_000, true);
    let cases = [
        (
            "x-forwarded-for",
            "203.0.113.7:51234, 10.0.0.1",
            "203.0.113.0",
        ),
        (
            "x-forwarded-for",
            "10.0.0.1, [2001:db8::7]:443",
            "2001:db8::",
        ),
        (
            "forwarded",
            "for=\"[2001:db8:cafe::17]:4711\";proto=https",
            "2001:db8:cafe::",
        ),
        ("forwarded", "for=unknown, for=198.51.100.4", "198.51.100.0"),
    ];
    for (i, (header, value, _)) in cases.iter().enumerate() {
        let body = json!({"anonymousId": "a", "messageId": format!("x{i}")}).to_string();
        let request = Request::post("/v1/page")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, "Basic d2tfYWNtZTo=")
            .header(*header, *value)
            .body(Body::from(body))
            .expect("request");
        let response = router(h.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{header}: {value}");
    }
    let events = h.consume_all();
    for (i, (header, value, stored)) in cases.iter().enumerate() {
        let event = events
            .iter()
            .find(|(_, e)| e.message_id == format!("x{i}"))
            .map(|(_, e)| e)
            .expect("stored");
        assert_eq!(event.ip, *stored, "{header}: {value}");
    }
}

/// Each event is enriched once, at the gateway: the client from its agent, the location from
/// its address before anonymisation, source and channel from its referrer and campaign; a
/// crawler's event is kept and flagged.
#[tokio::test]
async fn events_are_enriched_with_client_location_and_acquisition() {
    let h = harness(5_000);
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    let batch = json!({"batch": [
        {"type": "page", "messageId": "m-person", "anonymousId": "a-1",
         "context": {"userAgent": chrome, "ip": "193.0.6.139",
                     "page": {"url": "https://acme.example/p?utm_source=google&utm_medium=cpc&utm_campaign=spring&utm_content=ad-2&utm_term=shoes",
                              "referrer": "https://www.google.co.uk/"}}},
        {"type": "page", "messageId": "m-inside", "anonymousId": "a-1",
         "context": {"userAgent": chrome, "ip": "193.0.6.139",
                     "page": {"url": "https://acme.example/q", "referrer": "https://acme.example/p"}}},
        {"type": "page", "messageId": "m-crawler", "anonymousId": "a-2",
         "context": {"userAgent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                     "ip": "10.1.2.3", "page": {"url": "https://acme.example/"}}}
    ]});
    let (status, _, body) = h
        .post("/v1/batch", Some("wk_acme"), batch.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events: std::collections::HashMap<String, Event> = h
        .consume_all()
        .into_iter()
        .map(|(_, event)| (event.message_id.clone(), event))
        .collect();

    let person = &events["m-person"];
    assert_eq!(person.ip, "193.0.6.0", "anonymised after the lookup");
    assert_eq!(
        (
            person.client.device.as_str(),
            person.client.browser.as_str(),
            person.client.browser_version.as_str()
        ),
        ("Desktop", "Chrome", "120.0")
    );
    assert_eq!(
        (person.client.os.as_str(), person.client.os_version.as_str()),
        ("Windows", "10")
    );
    assert_eq!(
        person.location.country, "NL",
        "RIPE NCC's address is in Amsterdam"
    );
    assert!(!person.location.city.is_empty(), "{:?}", person.location);
    assert_eq!(person.campaign.content, "ad-2");
    assert_eq!(person.campaign.term, "shoes");
    assert_eq!(person.acquisition.source, "Google");
    assert_eq!(person.acquisition.channel, "Paid Search");
    assert!(!person.is_bot);

    let inside = &events["m-inside"];
    assert_eq!(
        inside.acquisition.source, "",
        "a page of the site is no source"
    );
    assert_eq!(inside.acquisition.channel, "Direct");

    let crawler = &events["m-crawler"];
    assert!(crawler.is_bot, "kept and flagged");
    assert_eq!(crawler.client.device, "Bot");
    assert_eq!(
        crawler.location,
        schemas::Location::default(),
        "a private address has no place"
    );
}

/// Plausible's Events API: `202 ok`; one event per tenant whose domain it names, under an id
/// derived per tenant; an engagement ping stored non-interactive; a hash route kept; an
/// unknown domain and a missing name refused by name.
#[tokio::test]
async fn plausible_events_reach_each_named_site() {
    let h = harness(5_000);
    let send = |body: Value| {
        let request = Request::post("/api/event")
            .header(header::CONTENT_TYPE, "text/plain")
            .header(
                header::USER_AGENT,
                "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            )
            .body(Body::from(body.to_string()))
            .expect("request");
        let app = router(h.state.clone());
        async move {
            let response = app.oneshot(request).await.expect("infallible");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            (status, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (status, body) = send(
        json!({"n": "pageview", "u": "https://acme.example/app#/settings",
        "d": "acme.example,www.globex.example", "r": "https://www.google.com/", "h": 1, "v": 36}),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::ACCEPTED, "ok"));
    let (status, _) = send(json!({"n": "engagement", "u": "https://acme.example/", "d": "acme.example", "e": 1200, "sd": 40})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) =
        send(json!({"n": "pageview", "u": "https://x.example/", "d": "nobody.example"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("unknown_domain") && body.contains("nobody.example"),
        "{body}"
    );
    let (status, body) = send(json!({"u": "https://acme.example/", "d": "acme.example"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("invalid_event") && body.contains("\"n\""),
        "{body}"
    );

    let events = h.consume_all();
    let views: Vec<&Event> = events
        .iter()
        .map(|(_, event)| event)
        .filter(|event| event.kind == EventKind::Page)
        .collect();
    let tenants: Vec<&str> = views.iter().map(|event| event.tenant.as_str()).collect();
    assert_eq!(views.len(), 2, "one per site: {tenants:?}");
    assert!(tenants.contains(&"acme") && tenants.contains(&"globex"));
    for view in &views {
        assert!(
            view.anonymous_id.starts_with("pl-"),
            "{}",
            view.anonymous_id
        );
        assert_eq!(view.page.path, "/app#/settings");
        assert_eq!(view.acquisition.source, "Google");
        assert_eq!(view.client.browser, "Firefox");
        assert!(!view.non_interactive);
    }
    assert_ne!(
        views[0].anonymous_id, views[1].anonymous_id,
        "ids are per site"
    );
    let pings: Vec<&Event> = events
        .iter()
        .map(|(_, event)| event)
        .filter(|event| event.name == "engagement")
        .collect();
    assert_eq!(pings.len(), 1);
    assert!(pings[0].non_interactive);
    let acme_view = views
        .iter()
        .find(|event| event.tenant == "acme")
        .expect("acme's view");
    assert_eq!(
        pings[0].anonymous_id, acme_view.anonymous_id,
        "the same visitor"
    );
    assert!(
        pings[0]
            .properties
            .contains(&("engagement_ms".into(), "1200".into()))
    );
}
