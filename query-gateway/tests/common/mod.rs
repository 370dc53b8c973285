//! The query gateway's test fixture: real ClickHouse, hand-made rows for two tenants.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use clickstream_query_gateway::ask::provider::Provider;
use clickstream_query_gateway::ask::run::{RunLimits, Runner};
use clickstream_query_gateway::ask::{AskLimits, AskService};
use clickstream_query_gateway::metrics::Metrics;
use clickstream_query_gateway::{AppState, router};
use schemas::tenants::Tenants;
use serde_json::Value;
use tower::ServiceExt;

#[path = "../../../deploy/chdb/harness.rs"]
pub mod chdb;
pub mod chromium;
pub mod rows;
pub mod shop;

/// 2024-05-01T00:00:00Z.
pub const T: i64 = 1_714_521_600;
pub const DAY: i64 = 86_400;

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with deploy/test.sh, which starts the servers")
    })
}

/// The test server's URL; the tests fail loudly without one.
pub fn clickhouse_url() -> String {
    required_env("CLICKSTREAM_CLICKHOUSE_URL")
}

/// A new database named `<prefix>_<pid>_<ms>_<n>` with every table of the schema.
pub async fn create_database(http: &reqwest::Client, url: &str, prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let database = format!(
        "{prefix}_{}_{}_{unique}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let version = schemas::version::ServerVersion::parse(&sql(http, url, "SELECT version()").await)
        .expect("version");
    for statement in schemas::ddl::statements(&database, version) {
        sql(http, url, &statement).await;
    }
    database
}

/// Runs `statement`, panicking with ClickHouse's message when it fails.
pub async fn sql(http: &reqwest::Client, url: &str, statement: &str) -> String {
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

/// Ask over `database`, answered by `provider` or, without one, the offline translator.
pub fn ask_service(
    url: &str,
    database: &str,
    provider: Option<Provider>,
    limits: AskLimits,
) -> (Arc<AskService>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let runner = Runner::new(url, database, RunLimits::default());
    let ask = AskService::new(
        runner,
        provider,
        schemas::version::ServerVersion::OLDEST,
        limits,
        metrics.clone(),
    );
    (Arc::new(ask), metrics)
}

/// Sends `request` to a gateway over `state`: the status and the JSON answer (`null` if the
/// answer is not JSON).
pub async fn call(state: &Arc<AppState>, request: Request<Body>) -> (u16, Value) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `POST` of JSON `body` to `path`, with `key` as the bearer key if there is one.
pub async fn post_json(
    state: &Arc<AppState>,
    key: Option<&str>,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    call(state, request.body(Body::from(body.to_string())).unwrap()).await
}

/// `POST /api/v2/query` of `body` with read key `key` to a gateway over `state`.
pub async fn query_v2(state: &Arc<AppState>, key: &str, body: &Value) -> (u16, Value) {
    post_json(state, Some(key), "/api/v2/query", body).await
}

pub struct Fixture {
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    pub url: String,
    pub database: String,
}

/// A database with rows for tenants `acme` (read key `rk_acme`) and `globex`, around `T`.
pub async fn fixture(base: i64) -> Fixture {
    let url = clickhouse_url();
    let http = reqwest::Client::new();
    let database = create_database(&http, &url, "query").await;
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
        event("acme", "e1", "page", "", "v1", "p1", base + 10, "/a", 0, 1),
        event(
            "acme",
            "e2",
            "page",
            "",
            "v2",
            "p-old",
            base + 70,
            "/a",
            0,
            1,
        ),
        // A later version of e2 re-attributes it: only this one counts.
        event("acme", "e2", "page", "", "v2", "p1", base + 70, "/a", 0, 2),
        event(
            "acme",
            "e3",
            "page",
            "",
            "v3",
            "p3",
            base + 3_700,
            "/b",
            0,
            1,
        ),
        event(
            "acme",
            "e4",
            "track",
            "Signup",
            "v1",
            "p1",
            base + 20,
            "/a",
            0,
            1,
        ),
        event("acme", "e5", "alias", "", "v4", "p4", base + 30, "", 0, 1),
        event(
            "acme",
            "e6",
            "page",
            "",
            "v5",
            "p5",
            base + 40,
            "/late",
            1,
            1,
        ),
        event("acme", "e7", "page", "", "v9", "p9", base - 100, "/a", 0, 1),
        // p1 comes back a week later (retention), outside every one-day range.
        event(
            "acme",
            "e8",
            "page",
            "",
            "v1",
            "p1",
            base + 8 * DAY,
            "/a",
            0,
            1,
        ),
        // A mobile day, far from the other rows: screens are page views, a CRM sync's
        // identify is not activity, a page view followed by a track is an engaged session.
        event(
            "acme",
            "m1",
            "screen",
            "Home",
            "mv1",
            "mp1",
            base + 20 * DAY + 10,
            "",
            0,
            1,
        ),
        event(
            "acme",
            "m2",
            "screen",
            "Settings",
            "mv1",
            "mp1",
            base + 20 * DAY + 20,
            "",
            0,
            1,
        ),
        event(
            "acme",
            "m3",
            "identify",
            "",
            "mv2",
            "mp2",
            base + 20 * DAY + 30,
            "",
            0,
            1,
        ),
        event(
            "acme",
            "m4",
            "page",
            "",
            "mv3",
            "mp3",
            base + 20 * DAY + 40,
            "/a",
            0,
            1,
        ),
        event(
            "acme",
            "m5",
            "track",
            "Signup",
            "mv3",
            "mp3",
            base + 20 * DAY + 50,
            "/a",
            0,
            1,
        ),
        event(
            "globex",
            "g1",
            "page",
            "",
            "w1",
            "q1",
            base + 10,
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
            base + 15,
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
    // The engine's visitor-hour rollup of these events, derived the obvious way, plus a row
    // that an identity merge retracted (v2 was p-old's until e2 was re-attributed).
    sql(&http, &url, &format!(
        "INSERT INTO {database}.agg_hour_visitors (tenant, hour, visitor_id, person_id, events, page_views, version) \
         SELECT tenant, toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS hour_start, \
                if(anonymous_id != '', anonymous_id, user_id) AS visitor, person_id, \
                toUInt32(count()), toUInt32(countIf(type IN ('page', 'screen'))), 2 \
         FROM {database}.events FINAL WHERE late = 0 AND type IN ('page', 'screen', 'track') \
         GROUP BY tenant, hour_start, visitor, person_id"
    ))
    .await;
    sql(&http, &url, &format!(
        "INSERT INTO {database}.agg_hour_visitors (tenant, hour, visitor_id, person_id, events, page_views, version) VALUES \
         ('acme', toDateTime({hour}), 'v2', 'p-old', 1, 1, 1), ('acme', toDateTime({hour}), 'v2', 'p-old', 0, 0, 2)",
        hour = base - base.rem_euclid(3600),
    ))
    .await;
    let session = |tenant: &str,
                   id: &str,
                   person: &str,
                   start: i64,
                   duration_ms: i64,
                   bounce: u8,
                   referrer: &str,
                   source: &str,
                   deleted: u8| {
        format!(
            "('{tenant}', '{id}', '{person}', toDateTime({start}), {start}000, {duration_ms}, {bounce}, '{referrer}', '{source}', {deleted}, 1)"
        )
    };
    let sessions = [
        session(
            "acme",
            "s1",
            "p1",
            base + 10,
            10_000,
            0,
            "https://g.com",
            "news",
            0,
        ),
        session("acme", "s2", "p1", base + 70, 0, 1, "", "", 0),
        session(
            "acme",
            "s3",
            "p1",
            base + 80,
            5_000,
            0,
            "https://merged.example",
            "",
            1,
        ),
        session(
            "acme",
            "s4",
            "p3",
            base + 3_700,
            0,
            1,
            "https://g.com",
            "",
            0,
        ),
        session("acme", "s9", "p9", base - 100, 0, 1, "", "", 0),
        session(
            "acme",
            "ms1",
            "mp1",
            base + 20 * DAY + 10,
            10_000,
            0,
            "",
            "",
            0,
        ),
        session(
            "acme",
            "ms3",
            "mp3",
            base + 20 * DAY + 40,
            10_000,
            0,
            "",
            "",
            0,
        ),
        session(
            "globex",
            "t1",
            "q1",
            base + 10,
            5_000,
            0,
            "https://globex-ref.example",
            "globex-news",
            0,
        ),
    ];
    sql(&http, &url, &format!(
        "INSERT INTO {database}.sessions (tenant, session_id, person_id, start_time, start_ms, duration_ms, is_bounce, entry_referrer, utm_source, deleted, version) VALUES {}",
        sessions.join(", ")
    ))
    .await;
    // Superseded versions, which only `FINAL` or `argMax(.., version)` readers skip: s2 once
    // belonged to another person and was not a bounce, s3 was alive before its merge, s4
    // belonged to p1 before an identity change moved it to p3.
    sql(&http, &url, &format!(
        "INSERT INTO {database}.sessions (tenant, session_id, person_id, start_time, start_ms, duration_ms, is_bounce, entry_referrer, utm_source, deleted, version) VALUES \
         ('acme', 's2', 'p-old', toDateTime({s2}), {s2}000, 9000, 0, 'https://stale.example', '', 0, 0), \
         ('acme', 's3', 'p1', toDateTime({s3}), {s3}000, 5000, 0, 'https://merged.example', '', 0, 0), \
         ('acme', 's4', 'p1', toDateTime({s4}), {s4}000, 0, 1, 'https://g.com', '', 0, 0)",
        s2 = base + 70,
        s3 = base + 80,
        s4 = base + 3_700,
    ))
    .await;
    // Two progress records of acme; the later epoch's is current. globex has none.
    sql(&http, &url, &format!(
        "INSERT INTO {database}._progress (tenant, complete_until_ms, epoch, updated_at) VALUES \
         ('acme', {}, 1, now()), ('acme', {}, 2, now())",
        base * 1000 + 5_000,
        base * 1000 + 9_000
    ))
    .await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\nread_keys=['rk_acme']\nshare_keys=['sk_acme']\n[[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nread_keys=['rk_globex']\n",
    )
    .expect("tenants");
    let clickhouse = clickhouse::Client::default()
        .with_url(&url)
        .with_database(&database)
        .with_validation(false)
        .with_setting("readonly", "2");
    let (ask, metrics) = ask_service(&url, &database, None, AskLimits::default());
    Fixture {
        state: Arc::new(AppState {
            tenants: tenants.into(),
            clickhouse,
            live: Default::default(),
            // Short, so the browser test sees the dashboard reconnect.
            live_stream_lifetime: std::time::Duration::from_secs(2),
            ask,
            metrics,
            clock: Default::default(),
            erasure: None,
        }),
        http,
        url,
        database,
    }
}

impl Fixture {
    pub async fn get(&self, key: Option<&str>, path: &str) -> (StatusCode, Value) {
        self.send(key, Request::get(path), Body::empty()).await
    }

    pub async fn delete(&self, key: Option<&str>, path: &str) -> (StatusCode, Value) {
        self.send(key, Request::delete(path), Body::empty()).await
    }

    /// `POST` of a JSON body.
    pub async fn post(&self, key: Option<&str>, path: &str, body: &Value) -> (StatusCode, Value) {
        let request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        self.send(key, request, Body::from(body.to_string())).await
    }

    async fn send(
        &self,
        key: Option<&str>,
        mut request: axum::http::request::Builder,
        body: Body,
    ) -> (StatusCode, Value) {
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let response = router(self.state.clone())
            .oneshot(request.body(body).unwrap())
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

    pub async fn drop_database(&self) {
        sql(
            &self.http,
            &self.url,
            &format!("DROP DATABASE {}", self.database),
        )
        .await;
    }
}
