//! The REST API against real ClickHouse, in-process and over a socket: values checked against
//! hand-computed expectations, tenant isolation, bad parameters, the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clickstream_query_gateway::{API_PATHS, AppState, OPENAPI, router};
use schemas::tenants::Tenants;
use serde_json::{Value, json};
use tower::ServiceExt;

/// 2024-05-01T00:00:00Z.
const T: i64 = 1_714_521_600;
const DAY: i64 = 86_400;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with deploy/test.sh, which starts the servers")
    })
}

async fn sql(http: &reqwest::Client, url: &str, statement: &str) -> String {
    let response = http
        .post(url)
        .body(statement.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("ClickHouse at {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{statement}: {text}");
    text
}

struct Fixture {
    state: Arc<AppState>,
    http: reqwest::Client,
    url: String,
    database: String,
}

async fn fixture() -> Fixture {
    let url = required_env("CLICKSTREAM_CLICKHOUSE_URL");
    let http = reqwest::Client::new();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let database = format!(
        "query_{}_{}_{unique}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let version = schemas::ddl::ServerVersion::parse(&sql(&http, &url, "SELECT version()").await)
        .expect("version");
    for statement in schemas::ddl::statements(&database, version) {
        sql(&http, &url, &statement).await;
    }
    let event = |tenant: &str,
                 id: &str,
                 kind: &str,
                 name: &str,
                 visitor: &str,
                 person: &str,
                 time: i64,
                 path: &str,
                 late: u8,
                 version: u64| {
        format!(
            "('{tenant}', '{id}', '{kind}', '{name}', '{visitor}', '', toDateTime({time}), {time}000, '{path}', '{person}', {late}, {version})"
        )
    };
    let rows = [
        event("acme", "e1", "page", "", "v1", "p1", T + 10, "/a", 0, 1),
        event("acme", "e2", "page", "", "v2", "p-old", T + 70, "/a", 0, 1),
        // A later version of e2 re-attributes it: only this one counts.
        event("acme", "e2", "page", "", "v2", "p1", T + 70, "/a", 0, 2),
        event("acme", "e3", "page", "", "v3", "p3", T + 3_700, "/b", 0, 1),
        event(
            "acme",
            "e4",
            "track",
            "Signup",
            "v1",
            "p1",
            T + 20,
            "/a",
            0,
            1,
        ),
        event("acme", "e5", "alias", "", "v4", "p4", T + 30, "", 0, 1),
        event("acme", "e6", "page", "", "v5", "p5", T + 40, "/late", 1, 1),
        event("acme", "e7", "page", "", "v9", "p9", T - 100, "/a", 0, 1),
        event(
            "globex",
            "g1",
            "page",
            "",
            "w1",
            "q1",
            T + 10,
            "/secret",
            0,
            1,
        ),
        event(
            "globex",
            "g2",
            "track",
            "Exported",
            "w1",
            "q1",
            T + 15,
            "/secret",
            0,
            1,
        ),
    ];
    sql(&http, &url, &format!(
        "INSERT INTO {database}.events (tenant, message_id, type, name, anonymous_id, user_id, event_time, event_time_ms, path, person_id, late, version) VALUES {}",
        rows.join(", ")
    ))
    .await;
    let session = |tenant: &str,
                   id: &str,
                   start: i64,
                   duration_ms: i64,
                   bounce: u8,
                   referrer: &str,
                   source: &str,
                   deleted: u8| {
        format!(
            "('{tenant}', '{id}', toDateTime({start}), {start}000, {duration_ms}, {bounce}, '{referrer}', '{source}', {deleted}, 1)"
        )
    };
    let sessions = [
        session("acme", "s1", T + 10, 10_000, 0, "https://g.com", "news", 0),
        session("acme", "s2", T + 70, 0, 1, "", "", 0),
        session(
            "acme",
            "s3",
            T + 80,
            5_000,
            0,
            "https://merged.example",
            "",
            1,
        ),
        session("acme", "s4", T + 3_700, 0, 1, "https://g.com", "", 0),
        session("acme", "s9", T - 100, 0, 1, "", "", 0),
        session(
            "globex",
            "t1",
            T + 10,
            5_000,
            0,
            "https://globex-ref.example",
            "globex-news",
            0,
        ),
    ];
    sql(&http, &url, &format!(
        "INSERT INTO {database}.sessions (tenant, session_id, start_time, start_ms, duration_ms, is_bounce, entry_referrer, utm_source, deleted, version) VALUES {}",
        sessions.join(", ")
    ))
    .await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\nread_keys=['rk_acme']\n[[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nread_keys=['rk_globex']\n",
    )
    .expect("tenants");
    let clickhouse = clickhouse::Client::default()
        .with_url(&url)
        .with_database(&database)
        .with_validation(false)
        .with_setting("readonly", "2");
    Fixture {
        state: Arc::new(AppState {
            tenants,
            clickhouse,
        }),
        http,
        url,
        database,
    }
}

impl Fixture {
    async fn get(&self, key: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut request = Request::get(path);
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = router(self.state.clone())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn drop_database(&self) {
        sql(
            &self.http,
            &self.url,
            &format!("DROP DATABASE {}", self.database),
        )
        .await;
    }
}

fn range() -> String {
    format!("from={T}&to={}", T + DAY)
}

#[tokio::test]
async fn values_match_hand_computed_expectations() {
    let f = fixture().await;
    let (status, body) = f
        .get(Some("rk_acme"), &format!("/api/overview?{}", range()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let current = &body["current"];
    // Activity events e1, e2 (v2), e3, e4: the alias and the late event do not count.
    assert_eq!(
        (current["visitors"].clone(), current["persons"].clone()),
        (json!(3), json!(2)),
        "{body}"
    );
    assert_eq!(
        (current["page_views"].clone(), current["events"].clone()),
        (json!(3), json!(4))
    );
    // s1, s2, s4 (s3 was merged away): two bounces, 10 s in total.
    assert_eq!(current["sessions"], 3);
    assert!((current["bounce_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!((current["avg_session_duration_secs"].as_f64().unwrap() - 10.0 / 3.0).abs() < 1e-9);
    let previous = &body["previous"];
    assert_eq!(
        (previous["from"].clone(), previous["to"].clone()),
        (json!(T - DAY), json!(T))
    );
    assert_eq!(
        (previous["visitors"].clone(), previous["sessions"].clone()),
        (json!(1), json!(1))
    );

    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!(
                "/api/timeseries?{}&interval=hour&metric=page_views",
                range()
            ),
        )
        .await;
    assert_eq!(
        body["points"],
        json!([{"time": T, "value": 2}, {"time": T + 3_600, "value": 1}])
    );
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/timeseries?{}&interval=day&metric=sessions", range()),
        )
        .await;
    assert_eq!(body["points"], json!([{"time": T, "value": 3}]));

    let top = |kind: &'static str| {
        let f = &f;
        async move {
            f.get(Some("rk_acme"), &format!("/api/top/{kind}?{}", range()))
                .await
                .1["entries"]
                .clone()
        }
    };
    assert_eq!(
        top("pages").await,
        json!([{"key": "/a", "value": 2}, {"key": "/b", "value": 1}])
    );
    assert_eq!(top("events").await, json!([{"key": "Signup", "value": 1}]));
    assert_eq!(
        top("referrers").await,
        json!([{"key": "https://g.com", "value": 2}])
    );
    assert_eq!(
        top("utm_sources").await,
        json!([{"key": "news", "value": 1}])
    );

    // Filters narrow the event-based numbers.
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/overview?{}&path=/b", range()),
        )
        .await;
    assert_eq!(
        (
            body["current"]["page_views"].clone(),
            body["current"]["visitors"].clone()
        ),
        (json!(1), json!(1))
    );
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/top/pages?{}&limit=1", range()),
        )
        .await;
    assert_eq!(body["entries"], json!([{"key": "/a", "value": 2}]));
    f.drop_database().await;
}

#[tokio::test]
async fn a_key_never_sees_another_tenants_rows() {
    let f = fixture().await;
    let acme_only = ["/a", "/b", "Signup", "news", "g.com"];
    let globex_only = ["/secret", "Exported", "globex-news", "globex-ref"];
    let queries = [
        "/api/overview?{range}".to_owned(),
        "/api/overview?{range}&path=/a".to_owned(),
        "/api/overview?{range}&path=/secret".to_owned(),
        "/api/timeseries?{range}&metric=visitors&interval=minute".to_owned(),
        "/api/timeseries?{range}&metric=sessions&utm_source=news".to_owned(),
        "/api/top/pages?{range}&limit=1000".to_owned(),
        "/api/top/events?{range}".to_owned(),
        "/api/top/referrers?{range}".to_owned(),
        "/api/top/utm_sources?{range}&utm_source=news".to_owned(),
        "/api/top/pages?from=0&to=2000000000&limit=1000".to_owned(),
    ];
    for query in &queries {
        let query = query.replace("{range}", &range());
        for (key, foreign) in [("rk_globex", &acme_only[..]), ("rk_acme", &globex_only[..])] {
            let (status, body) = f.get(Some(key), &query).await;
            assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{query}: {status}"
            );
            let text = body.to_string();
            for secret in foreign {
                assert!(
                    !text.contains(secret),
                    "{key} saw {secret:?} through {query}: {text}"
                );
            }
        }
    }
    let (_, body) = f
        .get(Some("rk_globex"), &format!("/api/overview?{}", range()))
        .await;
    assert_eq!(
        (
            body["current"]["visitors"].clone(),
            body["current"]["events"].clone()
        ),
        (json!(1), json!(2))
    );
    // A tenant in the query string is refused, not obeyed.
    let (status, body) = f
        .get(
            Some("rk_globex"),
            &format!("/api/overview?{}&tenant=acme", range()),
        )
        .await;
    assert_eq!(
        (status, body["error"]["parameter"].clone()),
        (StatusCode::BAD_REQUEST, json!("tenant"))
    );
    f.drop_database().await;
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_problem() {
    let f = fixture().await;
    for (query, parameter) in [
        ("/api/overview?from=yesterday", "from"),
        ("/api/overview?from=10&to=5", "from"),
        ("/api/timeseries?interval=fortnight", "interval"),
        ("/api/timeseries?metric=revenue", "metric"),
        ("/api/top/pages?limit=0", "limit"),
        ("/api/top/pages?limit=many", "limit"),
        ("/api/overview?colour=blue", "colour"),
    ] {
        let (status, body) = f.get(Some("rk_acme"), query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter");
        assert_eq!(body["error"]["parameter"], parameter, "{query}: {body}");
    }
    for key in [None, Some("rk_nobody"), Some("wk_acme")] {
        let (status, body) = f.get(key, "/api/overview").await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("unauthorized")),
            "{key:?}"
        );
    }
    let (status, _) = f.get(Some("rk_acme"), "/api/top/passwords").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.drop_database().await;
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_serves_over_a_socket() {
    let f = fixture().await;
    let document: Value = serde_json::from_str(OPENAPI).expect("valid JSON");
    let mut documented: Vec<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort();
    let mut routed = API_PATHS.to_vec();
    routed.sort();
    assert_eq!(
        documented, routed,
        "every route is documented and every documented path is routed"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(axum::serve(listener, router(f.state.clone())).into_future());
    for path in API_PATHS {
        let path = path.replace("{kind}", "pages");
        let response = f
            .http
            .get(format!("http://{address}{path}?{}", range()))
            .bearer_auth("rk_acme")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "{path}");
    }
    let served: Value = f
        .http
        .get(format!("http://{address}/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert_eq!(served, document);
    server.abort();
    f.drop_database().await;
}
