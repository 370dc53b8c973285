//! Bad input never hurts: generated requests against the whole HTTP surface (in-process, with
//! librdkafka's mock cluster as the broker). Inputs are real SDK payloads mutated byte by byte,
//! random bytes, deep nesting, huge strings, invalid UTF-8, fields of the wrong type, each
//! sent to a random route, compressed or not, with or without a key. Whatever comes in:
//! no panic, no 5xx, every refusal a 4xx JSON error naming the problem, and Kafka holds exactly
//! the events of the accepted requests. A second run sends batches that mix events known to be
//! good with events known to be bad: Kafka must hold exactly the good ones, and a refusal for
//! each bad one.
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
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use schemas::Record;
use serde_json::{Value, json};
use tower::ServiceExt;

const ROUTES: [&str; 21] = [
    "/api/event",
    "/api/event",
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

/// An event as Plausible's tracker sends it to `/api/event` (short keys, `text/plain`).
fn plausible_event() -> Vec<u8> {
    json!({"n": "pageview", "u": "https://fuzz.example/a?utm_source=n#top", "d": "fuzz.example",
           "r": "https://www.google.com/", "p": {"plan": "pro"}, "h": 1, "v": 36})
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
    let mutated = (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        any::<bool>(),
    )
        .prop_map(|(edits, plausible)| {
            let mut bytes = if plausible {
                plausible_event()
            } else {
                sdk_batch()
            };
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
    let plausible_wrong_type = (
        prop::sample::select(vec![
            "n", "u", "d", "r", "p", "m", "$", "i", "h", "name", "url", "props",
        ]),
        any_value(),
    )
        .prop_map(|(field, value)| {
            let mut event: Value = serde_json::from_slice(&plausible_event()).unwrap();
            event[field] = value;
            event.to_string().into_bytes()
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
        2 => plausible_wrong_type,
        1 => proptest::collection::vec(any::<u8>(), 0..2_000),
        1 => deep,
        1 => huge,
        1 => invalid_utf8,
        1 => Just(sdk_batch()),
        1 => Just(plausible_event()),
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

/// Events a request accepted (200, or 202 on `/api/event`) must have put in Kafka: the body's `batch` length on
/// batch routes (read independently of the gateway), less the events the answer says it
/// refused one by one; else one.
fn accepted_events(case: &Case, answer: &Value) -> usize {
    if case.route == "/api/event" {
        return 1; // one tenant has the domain `fuzz.example`
    }
    let batch_route = ["/v1/batch", "/v1/import", "/v1/b"].contains(&case.route);
    if !batch_route {
        return 1;
    }
    let refused = answer["refused"].as_array().map_or(0, Vec::len);
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
    assert_eq!(
        answer["accepted"].as_u64().map(|n| n as usize),
        (refused > 0).then(|| envelope.batch.len() - refused),
        "the answer's count: {answer}"
    );
    envelope.batch.len() - refused
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

/// Every record in the topic (read up to the mock cluster's high watermarks, which are exact).
fn kafka_records(brokers: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "fuzz-verifier")
        .create()
        .expect("consumer");
    let mut total = 0;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..2 {
        let (_, high) = consumer
            .fetch_watermarks("events", partition, Duration::from_secs(5))
            .expect("watermarks");
        total += high as usize;
        assignment
            .add_partition_offset("events", partition, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(60);
    while records.len() < total {
        assert!(
            Instant::now() < deadline,
            "read {} of {total}",
            records.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("record");
            let payload = message.payload().expect("payload");
            records.push(schemas::wire::decode(payload).expect("the gateway writes valid records"));
        }
    }
    records
}

fn events_in(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|record| matches!(record, Record::Event(_)))
        .count()
}

/// A gateway in front of a fresh mock cluster with a two-partition `events` topic.
fn gateway() -> (
    MockCluster<'static, DefaultProducerContext>,
    tokio::runtime::Runtime,
    Arc<AppState>,
) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("events", 2, 1).expect("topic");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = runtime.block_on(async {
        Arc::new(AppState {
            tenants: schemas::tenants::Tenants::parse(
                "[[tenants]]\nid='fuzz'\nwrite_keys=['wk_fuzz']\ndomains=['fuzz.example']\n",
            )
            .unwrap(),
            producer: EventProducer::new(&KafkaConfig {
                brokers: cluster.bootstrap_servers(),
                topic: "events".into(),
                message_timeout_ms: 5_000,
                queue_max_messages: 100_000,
                linger_ms: 2,
            })
            .unwrap(),
            limits: Limits::default(),
            trust_forwarded_for: false,
            retry_after_secs: 1,
            metrics: Default::default(),
            rate_limiter: RateLimiter::local(),
            enricher: Arc::new(
                clickstream_ingest_gateway::enrich::Enricher::load(&Default::default())
                    .expect("enrichment rules"),
            ),
            salts: clickstream_ingest_gateway::salt::Salts::local(),
        })
    });
    (cluster, runtime, state)
}

/// An event the test knows to be good, with fields that only refine it drawn from forms the
/// gateway must read or do without (times, addresses, paths).
fn good_event() -> impl Strategy<Value = Value> {
    let time = prop_oneof![
        Just(json!("2026-12-02T10:00:00+0000")),
        Just(json!("2026-12-02T15:30:00+0530")),
        Just(json!("2026-12-02T10:00:00.123456Z")),
        Just(json!("2026-12-02 10:00:00")),
        Just(json!("not a time")),
        Just(json!(12345)),
        Just(Value::Null),
    ];
    let ip = prop_oneof![
        Just(json!("203.0.113.7:51234")),
        Just(json!("203.0.113.7, 10.0.0.1")),
        Just(json!("[2001:db8::1]:443")),
        Just(json!("garbage")),
        Just(json!(["1.2.3.4"])),
    ];
    let kind = prop::sample::select(vec![
        "track", "page", "screen", "identify", "alias", "group",
    ]);
    (kind, time, ip, "/[a-z]{0,6}(\\?[a-z]=1)?").prop_map(|(kind, time, ip, path)| {
        json!({"type": kind, "event": "Signed Up", "anonymousId": "a", "userId": "u",
               "previousId": "p", "groupId": "g", "timestamp": time,
               "properties": {"path": path}, "context": {"ip": ip}})
    })
}

/// An event the test knows to be bad, whatever else it holds.
fn bad_event() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "track", "anonymousId": "a"})),
        Just(json!({"type": "page"})),
        Just(json!({"type": "teleport", "anonymousId": "a"})),
        Just(json!({"anonymousId": "a"})),
        Just(json!({"type": "track", "event": "e", "userId": ["x"]})),
        Just(json!({"type": "page", "anonymousId": "a", "properties": 3})),
        Just(json!({"type": "group", "userId": "u"})),
        Just(json!({"type": "alias", "userId": "u"})),
        Just(
            json!({"type": "page", "anonymousId": "a", "properties": {"big": "x".repeat(40_000)}})
        ),
        Just(json!("not an object")),
        Just(json!(7)),
        Just(json!([])),
    ]
}

/// Issue 20: one bad event never costs the batch. Batches mix events the test knows to be good
/// with events it knows to be bad; Kafka must hold exactly the good ones (by `messageId`), and
/// a refusal record for every bad one that had an id.
#[test]
fn a_batch_stores_exactly_its_good_events() {
    let cases: u32 = std::env::var("CLICKSTREAM_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .map_or(500, |n| (n / 20).max(1));
    let (cluster, runtime, state) = gateway();
    let batch = proptest::collection::vec((any::<bool>(), good_event(), bad_event()), 1..12);
    let expected: Arc<Mutex<(Vec<String>, Vec<String>)>> = Arc::default();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&batch, |members| {
        let case = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut events = Vec::new();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        // What the answer must name: each bad event's index and id (none for a non-object).
        let mut refusals = Vec::new();
        for (i, (is_good, mut good_event, mut bad_event)) in members.into_iter().enumerate() {
            let id = format!("c{case}-{i}");
            let event = if is_good {
                &mut good_event
            } else {
                &mut bad_event
            };
            let has_id = match event.as_object_mut() {
                Some(object) => {
                    object.insert("messageId".into(), json!(id));
                    true
                }
                None => false,
            };
            match (is_good, has_id) {
                (true, _) => good.push(id),
                (false, true) => {
                    refusals.push(json!([i, id]));
                    bad.push(id);
                }
                (false, false) => refusals.push(json!([i, null])),
            }
            events.push(event.clone());
        }
        let case = Case {
            route: "/v1/batch",
            body: json!({"batch": events}).to_string().into_bytes(),
            encoding: None,
            compress: false,
            key: Some("wk_fuzz"),
        };
        let response = runtime.block_on(router(state.clone()).oneshot(request(&case)));
        let response = response.unwrap();
        let status = response.status().as_u16();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        prop_assert_eq!(status, 200, "{}", answer);
        let named: Vec<Value> = answer["refused"]
            .as_array()
            .map(|refused| {
                refused
                    .iter()
                    .map(|r| json!([r["index"], r["messageId"]]))
                    .collect()
            })
            .unwrap_or_default();
        prop_assert_eq!(named, refusals, "{}", answer);
        let mut expected = expected.lock().unwrap();
        expected.0.extend(good);
        expected.1.extend(bad);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let records = kafka_records(&cluster.bootstrap_servers());
    let mut stored: Vec<String> = records
        .iter()
        .filter_map(|record| match record {
            Record::Event(event) => Some(event.message_id.clone()),
            Record::Warning(_) => None,
        })
        .collect();
    let mut refused: Vec<String> = records
        .iter()
        .filter_map(|record| match record {
            Record::Warning(w) if w.kind == schemas::WarningKind::RefusedEvent => {
                Some(w.message_id.clone())
            }
            _ => None,
        })
        .collect();
    refused.sort();
    refused.dedup();
    let (mut good, bad) = expected.lock().unwrap().clone();
    stored.sort();
    good.sort();
    assert_eq!(stored, good, "Kafka holds exactly the good events");
    for id in &bad {
        assert!(
            refused.binary_search(id).is_ok(),
            "no refusal recorded for {id}"
        );
    }
    println!(
        "{cases} mixed batches: {} good events stored, {} bad refused",
        good.len(),
        bad.len()
    );
}

#[test]
fn no_input_breaks_the_gateway_or_leaks_into_kafka() {
    let cases: u32 = std::env::var("CLICKSTREAM_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let (cluster, runtime, state) = gateway();
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
        let code = if status == 200 || status == 202 {
            *expected_in_kafka.lock().unwrap() += accepted_events(&case, &body);
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
        events_in(&kafka_records(&cluster.bootstrap_servers())),
        expected,
        "Kafka holds exactly the events of the accepted requests"
    );
    assert!(
        statuses.keys().any(|(status, _)| *status == 200)
            && statuses.keys().any(|(status, _)| *status == 400),
        "the generator reaches both acceptance and refusal: {statuses:?}"
    );
}
