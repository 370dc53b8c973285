//! Bad input never hurts: generated requests against the whole HTTP surface (in-process, with
//! librdkafka's mock cluster as the broker). Inputs are real SDK payloads mutated byte by byte,
//! random bytes, deep nesting, huge strings, invalid UTF-8, fields of the wrong type, each
//! sent to a random route, compressed or not, with or without a key. Whatever comes in:
//! no panic, no 5xx, every refusal a 4xx JSON error naming the problem, and Kafka holds exactly
//! the events of the accepted requests.
//!
//! CI runs `CLICKSTREAM_FUZZ_CASES` (default 10,000) cases; the long run is
//! `CLICKSTREAM_FUZZ_CASES=1000000 cargo test --release -p clickstream-ingest-gateway --test fuzz -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use clickstream_ingest_gateway::kafka::{EventProducer, KafkaConfig};
use clickstream_ingest_gateway::ratelimit::RateLimiter;
use clickstream_ingest_gateway::segment::Limits;
use clickstream_ingest_gateway::{AppState, router};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};
use tower::ServiceExt;

const ROUTES: [&str; 19] = [
    "/v1/batch",
    "/v1/import",
    "/v1/b",
    "/v1/track",
    "/v1/page",
    "/v1/screen",
    "/v1/identify",
    "/v1/alias",
    "/v1/group",
    "/v1/t",
    "/v1/p",
    "/v1/s",
    "/v1/i",
    "/v1/a",
    "/v1/g",
    "/v1/nope",
    "/v1/",
    "/v1/batch/extra",
    "/tracker.js",
];

/// A batch as analytics-node sends it: the seed the mutations start from.
fn sdk_batch() -> Vec<u8> {
    json!({
        "batch": [
            {"type": "track", "messageId": "m1", "anonymousId": "a1", "userId": 42,
             "event": "Signed Up", "properties": {"plan": "pro", "seats": 3, "tags": ["x"]},
             "timestamp": "2024-05-01T12:00:00.000Z",
             "context": {"library": {"name": "analytics-node", "version": "3.1.0"},
                         "page": {"url": "https://x.io/a?utm_source=n"}}},
            {"type": "identify", "messageId": "m2", "anonymousId": "a1", "userId": "u1",
             "traits": {"email": "a@b.c"}},
            {"type": "alias", "messageId": "m3", "previousId": "a1", "userId": "u1"}
        ],
        "sentAt": "2024-05-01T12:00:01.000Z"
    })
    .to_string()
    .into_bytes()
}

/// JSON values of any type, for fields of the wrong type.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One request body.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let mutated =
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8)
            .prop_map(|edits| {
                let mut bytes = sdk_batch();
                for (at, byte, op) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = at.index(bytes.len());
                    match op {
                        0 => bytes[i] = byte,
                        1 => bytes.insert(i, byte),
                        2 => {
                            bytes.remove(i);
                        }
                        _ => bytes.truncate(i),
                    }
                }
                bytes
            });
    let wrong_type =
        (0usize..3, "[a-zA-Z]{1,12}", any_value()).prop_map(|(index, field, value)| {
            let mut batch: Value = serde_json::from_slice(&sdk_batch()).unwrap();
            batch["batch"][index][field.as_str()] = value;
            batch.to_string().into_bytes()
        });
    let deep = (1usize..20_000, any::<bool>()).prop_map(|(depth, arrays)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        format!(
            "{{\"batch\": [{{\"type\": \"track\", \"anonymousId\": \"a\", \"event\": \"e\", \"properties\": {{\"p\": {}1{}}}}}]}}",
            open.repeat(depth),
            close.repeat(depth)
        )
        .into_bytes()
    });
    let huge = (0usize..700_000).prop_map(|size| {
        json!({"type": "track", "anonymousId": "a", "event": "e", "properties": {"big": "x".repeat(size)}})
            .to_string()
            .into_bytes()
    });
    let invalid_utf8 = (any::<prop::sample::Index>(), 0x80u8..=0xff).prop_map(|(at, byte)| {
        let mut bytes = sdk_batch();
        let i = at.index(bytes.len());
        bytes.insert(i, byte);
        bytes
    });
    let escapes = proptest::collection::vec(
        prop::sample::select(vec!["\\ud83d", "\\ude00", "\\ud83d\\ude00", "\\\\ud83d", "\\u00e9", "x"]),
        1..6,
    )
    .prop_map(|parts| {
        format!(
            r#"{{"batch": [{{"type": "track", "anonymousId": "a", "event": "e", "properties": {{"t": "{}"}}}}]}}"#,
            parts.concat()
        )
        .into_bytes()
    });
    prop_oneof![
        4 => mutated,
        1 => escapes,
        3 => wrong_type,
        1 => proptest::collection::vec(any::<u8>(), 0..2_000),
        1 => deep,
        1 => huge,
        1 => invalid_utf8,
        1 => Just(sdk_batch()),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    route: &'static str,
    body: Vec<u8>,
    /// `None`, or a declared encoding; `compress` says whether the body really is gzip.
    encoding: Option<&'static str>,
    compress: bool,
    key: Option<&'static str>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(ROUTES.to_vec()),
        body(),
        prop_oneof![
            6 => Just(None),
            2 => Just(Some("gzip")),
            1 => Just(Some("deflate")),
            1 => Just(Some("br")),
        ],
        any::<bool>(),
        prop_oneof![4 => Just(Some("wk_fuzz")), 1 => Just(Some("wrong")), 1 => Just(None)],
    )
        .prop_map(|(route, body, encoding, compress, key)| Case {
            route,
            body,
            encoding,
            compress,
            key,
        })
}

/// Events a request accepted with 200 must have put in Kafka, read independently of the
/// gateway: the body's `batch` length on batch routes, else one.
fn accepted_events(case: &Case) -> usize {
    let batch_route = ["/v1/batch", "/v1/import", "/v1/b"].contains(&case.route);
    if !batch_route {
        return 1;
    }
    // Counted without parsing the events themselves: an event may nest as deep as serde_json
    // allows, and the envelope around it adds two levels.
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        batch: Vec<&'a serde_json::value::RawValue>,
    }
    let body = without_surrogate_escapes(&case.body);
    let envelope: Envelope<'_> = serde_json::from_slice(&body)
        .unwrap_or_else(|error| panic!("an accepted body is JSON: {error}"));
    envelope.batch.len()
}

/// The body with every `\uD800`-`\uDFFF` escape, paired or not, made a space: strict
/// parsers refuse lone ones, which the gateway accepts, and counting events does not depend
/// on what a string holds.
fn without_surrogate_escapes(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    for i in 0..out.len().saturating_sub(5) {
        let surrogate = out[i] == b'\\'
            && out[i + 1] == b'u'
            && out[i + 2].eq_ignore_ascii_case(&b'd')
            && matches!(out[i + 3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f');
        if surrogate {
            out[i + 2..i + 6].copy_from_slice(b"0020");
        }
    }
    out
}

fn request(case: &Case) -> Request<Body> {
    let mut request = Request::post(case.route).header(header::CONTENT_TYPE, "text/plain");
    let mut body = case.body.clone();
    if let Some(encoding) = case.encoding {
        request = request.header(header::CONTENT_ENCODING, encoding);
        if case.compress && encoding == "gzip" {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body).unwrap();
            body = encoder.finish().unwrap();
        } else if case.compress && encoding == "deflate" {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&body).unwrap();
            body = encoder.finish().unwrap();
        }
    }
    if let Some(key) = case.key {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        request = request.header(header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    request.body(Body::from(body)).unwrap()
}

/// Records in the topic (the mock cluster's high watermarks are exact).
fn kafka_records(brokers: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    (0..2)
        .map(|partition| {
            let (_, high) = consumer
                .fetch_watermarks("events", partition, Duration::from_secs(5))
                .expect("watermarks");
            high as usize
        })
        .sum()
}

#[test]
fn no_input_breaks_the_gateway_or_leaks_into_kafka() {
    let cases: u32 = std::env::var("CLICKSTREAM_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events", 2, 1).expect("topic");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = runtime.block_on(async {
        Arc::new(AppState {
            tenants: schemas::tenants::Tenants::parse(
                "[[tenants]]\nid='fuzz'\nwrite_keys=['wk_fuzz']\n",
            )
            .unwrap(),
            producer: EventProducer::new(&KafkaConfig {
                brokers: cluster.bootstrap_servers(),
                topic: "events".into(),
                message_timeout_ms: 5_000,
                queue_max_messages: 100_000,
            })
            .unwrap(),
            limits: Limits::default(),
            trust_forwarded_for: false,
            retry_after_secs: 1,
            metrics: Default::default(),
            rate_limiter: RateLimiter::local(),
        })
    });
    let statuses: Arc<Mutex<BTreeMap<(u16, String), u64>>> = Arc::default();
    let expected_in_kafka = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |case| {
        let response = runtime.block_on(router(state.clone()).oneshot(request(&case)));
        let response = response.unwrap();
        let status = response.status().as_u16();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert!(status < 500, "{status} for {case:?}: {body}");
        let code = if status == 200 {
            *expected_in_kafka.lock().unwrap() += accepted_events(&case);
            "success".to_owned()
        } else {
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let message = body["error"]["message"].as_str().unwrap_or_default();
            prop_assert!(
                !code.is_empty() && !message.is_empty(),
                "{status} without a JSON error naming the problem: {body}"
            );
            code
        };
        *statuses.lock().unwrap().entry((status, code)).or_default() += 1;
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let statuses = statuses.lock().unwrap().clone();
    println!("{cases} generated requests in {:.1?}:", started.elapsed());
    for ((status, code), count) in &statuses {
        println!("  {status} {code}: {count}");
    }
    let expected = *expected_in_kafka.lock().unwrap();
    assert_eq!(
        kafka_records(&cluster.bootstrap_servers()),
        expected,
        "Kafka holds exactly the events of the accepted requests"
    );
    assert!(
        statuses.keys().any(|(status, _)| *status == 200)
            && statuses.keys().any(|(status, _)| *status == 400),
        "the generator reaches both acceptance and refusal: {statuses:?}"
    );
}
