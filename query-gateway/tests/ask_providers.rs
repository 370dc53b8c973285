//! Ask with a model: the provider clients against local HTTP servers that speak Anthropic's
//! and OpenAI's wire formats (no real model is reachable here), scripted to answer good SQL,
//! hostile SQL, SQL that fails, malformed JSON, an error status, nothing in time, and too much.
//! Everything runs over real ClickHouse with two tenants' rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clickstream_query_gateway::ask::AskLimits;
use clickstream_query_gateway::ask::provider::{Provider, ProviderConfig, ProviderKind};
use clickstream_query_gateway::{AppState, router};
use common::{T, fixture};
use serde_json::{Value, json};
use tower::ServiceExt;

/// What the fake model does for one request.
#[derive(Debug, Clone)]
enum Reply {
    /// Answers this text in the provider's format, with token counts.
    Text(String),
    /// Answers this status and raw body.
    Raw(u16, String),
    /// Answers only after this long.
    Slow(Duration),
}

#[derive(Debug, Default)]
struct Fake {
    kind: Option<ProviderKind>,
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<(HeaderMap, Value)>>,
}

async fn respond(State(fake): State<Arc<Fake>>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    fake.requests.lock().unwrap().push((headers, request));
    let reply = fake
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Raw(500, "script exhausted".into()));
    match reply {
        Reply::Text(text) => {
            let body = match fake.kind {
                Some(ProviderKind::Anthropic) => json!({
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "content": [{"type": "text", "text": text}],
                    "usage": {"input_tokens": 100, "output_tokens": 20}
                }),
                _ => json!({
                    "id": "chatcmpl-1", "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20}
                }),
            };
            axum::Json(body).into_response()
        }
        Reply::Raw(status, body) => (StatusCode::from_u16(status).unwrap(), body).into_response(),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(json!({})).into_response()
        }
    }
}

/// A fake provider of `kind` answering `replies` in order; its base URL.
async fn fake_model(kind: ProviderKind, replies: Vec<Reply>) -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake {
        kind: Some(kind),
        replies: Mutex::new(replies.into()),
        requests: Mutex::default(),
    });
    let app = axum::Router::new()
        .route("/v1/messages", post(respond))
        .route("/v1/chat/completions", post(respond))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    let base = match kind {
        ProviderKind::Anthropic => format!("http://{address}"),
        ProviderKind::Openai => format!("http://{address}/v1"),
    };
    (fake, base)
}

struct Setup {
    state: Arc<AppState>,
    fake: Arc<Fake>,
    fixture: common::Fixture,
}

async fn setup(kind: ProviderKind, replies: Vec<Reply>, limits: AskLimits) -> Setup {
    let fixture = fixture(T).await;
    let (fake, base_url) = fake_model(kind, replies).await;
    let provider = Provider::new(ProviderConfig {
        kind,
        base_url,
        model: "test-model".into(),
        api_key: Some("sk-test".into()),
        timeout: Duration::from_secs(1),
        max_tokens: 512,
    });
    let (ask, metrics) =
        common::ask_service(&fixture.url, &fixture.database, Some(provider), limits);
    let base = &fixture.state;
    let state = Arc::new(AppState {
        tenants: (*base.tenants.current()).clone().into(),
        clickhouse: base.clickhouse.clone(),
        live: Default::default(),
        live_stream_lifetime: base.live_stream_lifetime,
        ask,
        metrics,
        clock: Default::default(),
        erasure: None,
    });
    Setup {
        state,
        fake,
        fixture,
    }
}

async fn ask(state: &Arc<AppState>, question: &str) -> (StatusCode, HeaderMap, Value) {
    let request = Request::post("/api/ask")
        .header(header::AUTHORIZATION, "Bearer rk_acme")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({ "question": question }).to_string()))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

/// acme's counted events, computed from the base table.
async fn acme_events(fixture: &common::Fixture) -> u64 {
    common::sql(
        &fixture.http,
        &fixture.url,
        &format!(
            "SELECT count() FROM {}.events FINAL WHERE tenant = 'acme' AND late = 0",
            fixture.database
        ),
    )
    .await
    .trim()
    .parse()
    .unwrap()
}

const GOOD: &str = "Here you go:\n```sql\nSELECT count() AS n FROM events\n```";

#[tokio::test]
async fn anthropic_wire_format_and_answer() {
    let s = setup(
        ProviderKind::Anthropic,
        vec![Reply::Text(GOOD.into())],
        AskLimits::default(),
    )
    .await;
    let (status, _, answer) = ask(&s.state, "How many events do we have?").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "answered", "{answer}");
    assert_eq!(
        (answer["provider"].as_str(), answer["model"].as_str()),
        (Some("anthropic"), Some("test-model"))
    );
    assert_eq!(answer["rows"], json!([[acme_events(&s.fixture).await]]));
    assert_eq!(answer["sql"], "SELECT count() AS n FROM events LIMIT 1000");
    assert!(
        answer["summary"]
            .as_str()
            .unwrap()
            .contains("complete up to"),
        "{answer}"
    );
    let requests = s.fake.requests.lock().unwrap().clone();
    let (headers, body) = &requests[0];
    assert_eq!(headers["x-api-key"], "sk-test");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(body["model"], "test-model");
    assert!(
        body["system"]
            .as_str()
            .unwrap()
            .contains("events(message_id String")
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "How many events do we have?"}])
    );
    // The question, its SQL, provider, tokens and outcome are logged.
    let mut logged = String::new();
    for _ in 0..50 {
        logged = common::sql(&s.fixture.http, &s.fixture.url, &format!(
            "SELECT provider, model, attempts, input_tokens, output_tokens, outcome, sql FROM {}.ask_log FORMAT TSV",
            s.fixture.database
        ))
        .await;
        if !logged.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        logged,
        "anthropic\ttest-model\t1\t100\t20\tanswered\tSELECT count() AS n FROM events LIMIT 1000\n"
    );
    s.fixture.drop_database().await;
}

#[tokio::test]
async fn openai_compatible_wire_format_and_answer() {
    let s = setup(
        ProviderKind::Openai,
        vec![Reply::Text(GOOD.into())],
        AskLimits::default(),
    )
    .await;
    let (_, _, answer) = ask(&s.state, "How many events do we have?").await;
    assert_eq!(answer["outcome"], "answered", "{answer}");
    assert_eq!(answer["rows"], json!([[acme_events(&s.fixture).await]]));
    let requests = s.fake.requests.lock().unwrap().clone();
    let (headers, body) = &requests[0];
    assert_eq!(headers[header::AUTHORIZATION], "Bearer sk-test");
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(
        body["messages"][1]["content"],
        "How many events do we have?"
    );
    s.fixture.drop_database().await;
}

#[tokio::test]
async fn a_hostile_model_is_refused_after_one_retry_and_leaks_nothing() {
    for hostile in [
        "SELECT name FROM system.tables",
        "SELECT 'globex' AS tenant, count() FROM events",
        "SELECT * FROM events; DROP TABLE events",
        "SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a String')",
        r"SELECT 'a\\'.*, `' AS s, path FROM events WHERE tenant = 'globex' --`.* FROM events",
        "SELECT path FROM events WHERE path IN (ask_log)",
    ] {
        let replies = vec![Reply::Text(hostile.into()), Reply::Text(hostile.into())];
        let s = setup(ProviderKind::Anthropic, replies, AskLimits::default()).await;
        let (status, _, answer) = ask(&s.state, "Show me everything").await;
        assert_eq!(status, 200);
        assert_eq!(answer["outcome"], "refused", "{hostile}: {answer}");
        assert_eq!(answer["rows"], json!([]));
        assert!(
            answer["error"].as_str().unwrap().contains("refused"),
            "{answer}"
        );
        let requests = s.fake.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 2, "one retry");
        let retry = requests[1].1["messages"][2]["content"].as_str().unwrap();
        assert!(retry.contains("The SQL guard refused it"), "{retry}");
        s.fixture.drop_database().await;
    }
}

#[tokio::test]
async fn a_failing_statement_is_retried_with_the_error_and_the_answer_hides_it() {
    let replies = vec![
        Reply::Text("SELECT no_such_column FROM events".into()),
        Reply::Text(GOOD.into()),
    ];
    let s = setup(ProviderKind::Openai, replies, AskLimits::default()).await;
    let (_, _, answer) = ask(&s.state, "How many events?").await;
    assert_eq!(answer["outcome"], "answered", "{answer}");
    let requests = s.fake.requests.lock().unwrap().clone();
    let retry = requests[1].1["messages"][3]["content"].as_str().unwrap();
    assert!(retry.contains("ClickHouse failed"), "{retry}");
    s.fixture.drop_database().await;
    // Twice wrong: the answer names the class, never ClickHouse's text.
    let replies = vec![
        Reply::Text("SELECT no_such_column FROM events".into()),
        Reply::Text("SELECT toUInt64(path) FROM events".into()),
    ];
    let s = setup(ProviderKind::Openai, replies, AskLimits::default()).await;
    let (_, _, answer) = ask(&s.state, "How many events?").await;
    assert_eq!(answer["outcome"], "failed", "{answer}");
    let text = answer.to_string();
    assert!(
        !text.contains("DB::Exception") && !text.contains("/a"),
        "{text}"
    );
    s.fixture.drop_database().await;
}

#[tokio::test]
async fn a_broken_model_falls_back_to_the_offline_translator_and_says_so() {
    for (reply, says) in [
        (Reply::Raw(200, "not json {".into()), "documented format"),
        (Reply::Raw(500, "overloaded".into()), "HTTP 500"),
        (
            Reply::Raw(200, json!({"choices": []}).to_string()),
            "documented format",
        ),
        (Reply::Slow(Duration::from_secs(3)), "did not answer within"),
        (Reply::Raw(200, "x".repeat(400 * 1024)), "exceeded"),
    ] {
        let s = setup(ProviderKind::Openai, vec![reply], AskLimits::default()).await;
        let (status, _, answer) = ask(&s.state, "How many page views in the last 7 days?").await;
        assert_eq!(status, 200);
        assert_eq!(answer["provider"], "offline", "{answer}");
        assert_eq!(answer["outcome"], "answered", "{answer}");
        assert!(
            answer["note"].as_str().unwrap().contains(says),
            "{says}: {answer}"
        );
        s.fixture.drop_database().await;
    }
}

#[tokio::test]
async fn the_daily_model_budget_and_the_question_rate_are_enforced() {
    let limits = AskLimits {
        questions_per_minute: std::num::NonZeroU32::new(2).unwrap(),
        model_calls_per_day: 1,
    };
    let s = setup(
        ProviderKind::Anthropic,
        vec![Reply::Text(GOOD.into())],
        limits,
    )
    .await;
    let (_, _, first) = ask(&s.state, "How many events in the last 7 days?").await;
    assert_eq!(first["provider"], "anthropic", "{first}");
    let (_, _, second) = ask(&s.state, "How many events in the last 7 days?").await;
    assert_eq!(second["provider"], "offline", "{second}");
    assert!(
        second["note"].as_str().unwrap().contains("budget"),
        "{second}"
    );
    let (status, headers, third) = ask(&s.state, "How many events in the last 7 days?").await;
    assert_eq!(status, 429, "{third}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(third["error"]["code"], "rate_limited");
    s.fixture.drop_database().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let s = setup(ProviderKind::Anthropic, vec![], AskLimits::default()).await;
    for (body, status) in [
        (json!({"question": ""}).to_string(), 400),
        (json!({"question": "x".repeat(501)}).to_string(), 400),
        (json!({"q": "hi"}).to_string(), 400),
        ("not json".to_owned(), 400),
    ] {
        let request = Request::post("/api/ask")
            .header(header::AUTHORIZATION, "Bearer rk_acme")
            .body(Body::from(body.clone()))
            .unwrap();
        let response = router(s.state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{body}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let error: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let request = Request::post("/api/ask")
        .body(Body::from(json!({"question": "hi"}).to_string()))
        .unwrap();
    let response = router(s.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        s.fake.requests.lock().unwrap().is_empty(),
        "no model call for a bad request"
    );
    s.fixture.drop_database().await;
}

/// A model answers with a typed query of the model first: it runs through the query model's
/// door (the numbers `/api/v2/query` gives), its names are checked against the tenant's (an
/// unknown one goes back to the model, which may fall back to SQL), and a query the model
/// refuses goes back with the model's message.
#[tokio::test]
async fn a_model_answers_with_a_typed_query_first_and_falls_back_to_guarded_sql() {
    let body = json!({"metrics": ["pageviews", "visitors"], "date_range": ["2024-04-30", "2024-05-31"], "dimensions": ["event:page"]});
    let typed = format!("```json\n{}\n```", json!({ "query": body }));
    let unknown = format!(
        "```json\n{}\n```",
        json!({"query": {"metrics": ["events"], "date_range": "all", "filters": [["is", "event:name", ["Purchased"]]]}})
    );
    let invalid = format!(
        "```json\n{}\n```",
        json!({"query": {"metrics": ["bounce_rate"], "date_range": "all", "dimensions": ["event:name"]}})
    );
    let s = setup(
        ProviderKind::Openai,
        vec![
            Reply::Text(typed.clone()),
            Reply::Text(unknown),
            Reply::Text(GOOD.into()),
            Reply::Text(invalid),
            Reply::Text(typed),
        ],
        AskLimits::default(),
    )
    .await;
    // 1. The typed query runs through the door: the same rows as the Stats API's.
    let (status, _, answer) = ask(&s.state, "Page views and visitors per page").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "answered", "{answer}");
    assert_eq!(answer["query"], json!({ "query": body }));
    assert!(answer["sql"].is_null(), "{answer}");
    let mut request = body.clone();
    request["site_id"] = json!("acme");
    let (_, twin) = common::query_v2(&s.state, "rk_acme", &request).await;
    let expected: Vec<Value> = twin["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut cells = row["dimensions"].as_array().unwrap().clone();
            cells.extend(row["metrics"].as_array().unwrap().iter().cloned());
            json!(cells)
        })
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(answer["rows"], json!(expected));
    assert!(
        answer["definitions"]
            .as_str()
            .unwrap()
            .contains("30 minutes"),
        "{answer}"
    );
    // 2. A name the tenant never had goes back to the model; its SQL then answers.
    let (_, _, answer) = ask(&s.state, "How many purchases?").await;
    assert_eq!(answer["outcome"], "answered", "{answer}");
    assert_eq!(answer["sql"], "SELECT count() AS n FROM events LIMIT 1000");
    // 3. A query the model refuses goes back with the model's own message.
    let (_, _, answer) = ask(&s.state, "Bounce rate per event").await;
    assert_eq!(answer["outcome"], "answered", "{answer}");
    assert_eq!(answer["query"], json!({ "query": body }));
    let requests = s.fake.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 5);
    let last_user = |index: usize| -> String {
        requests[index].1["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        last_user(2).contains("event:name \"Purchased\""),
        "{}",
        last_user(2)
    );
    assert!(last_user(4).contains("#/dimensions"), "{}", last_user(4));
    let system = requests[0].1["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // (acme's rows are older than the names' window, the last 366 days: none are listed.)
    assert!(
        system.contains("typed query") && system.contains("Use only these names of this site"),
        "{system}"
    );
    s.fixture.drop_database().await;
}
