//! Plausible's Stats APIs against hand-computed expectations, and a published Plausible API
//! client from PyPI (`plausible-mcp`, telemetry off) driven against the v1 endpoints over
//! real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use clickstream_query_gateway::{AppState, router};
use common::rows::{Event, Visit, load};
use schemas::tenants::Tenants;

/// 2026-01-10T00:00:00Z.
const DAY1_MS: i64 = 1_768_003_200_000;
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// Three visits over two days (UTC):
/// - s1, v1, 2026-01-10 10:00: `/` then `/pricing` a minute later; campaign `news`.
/// - s2, v2, 2026-01-10 11:00: `/` alone, a bounce.
/// - s3, v3, 2026-01-11 09:00: `/pricing`, then `Signed Up` five minutes later.
///
/// So over both days: 3 visitors, 3 visits, 4 page views, 5 events, bounce rate 33 %,
/// visit duration (60 + 0 + 300) / 3 = 120 s, views per visit 4 / 3 = 1.33; by page, `/` has
/// visitors v1 and v2 and `/pricing` v1 and v3. Plus one page view of `globex` and one of
/// acme's just now (the realtime count).
async fn fixture() -> Arc<AppState> {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "plausible").await;
    let s1 = [
        Event::new("acme", "a1", "page", DAY1_MS + 10 * HOUR_MS, "v1", "s1").path("/"),
        Event::new(
            "acme",
            "a2",
            "page",
            DAY1_MS + 10 * HOUR_MS + MINUTE_MS,
            "v1",
            "s1",
        )
        .path("/pricing"),
    ];
    let s2 = [Event::new("acme", "a3", "page", DAY1_MS + 11 * HOUR_MS, "v2", "s2").path("/")];
    let day2 = DAY1_MS + 24 * HOUR_MS;
    let s3 = [
        Event::new("acme", "a4", "page", day2 + 9 * HOUR_MS, "v3", "s3").path("/pricing"),
        Event::new(
            "acme",
            "a5",
            "track",
            day2 + 9 * HOUR_MS + 5 * MINUTE_MS,
            "v3",
            "s3",
        )
        .path("/pricing")
        .name("Signed Up"),
    ];
    // A crawler's page view, flagged by the gateway, inside s2's visit (so visit metrics are
    // unchanged): left out of event metrics unless bots are asked for.
    let mut crawler = Event::new(
        "acme",
        "b1",
        "page",
        DAY1_MS + 11 * HOUR_MS + MINUTE_MS,
        "crawler",
        "s2",
    )
    .path("/");
    crawler.bot = true;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let live = [Event::new("acme", "a6", "page", now_ms - MINUTE_MS, "v9", "s9").path("/")];
    let other =
        [Event::new("globex", "g1", "page", DAY1_MS + 10 * HOUR_MS, "w1", "t1").path("/secret")];
    let events: Vec<Event> = [&s1[..], &s2, &s3, &live, &other, &[crawler]].concat();
    let visits = [
        Visit::of(&s1, "news"),
        Visit::of(&s2, ""),
        Visit::of(&s3, ""),
        Visit::of(&live, ""),
        Visit::of(&other, ""),
    ];
    load(&http, &url, &database, &events, &visits).await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid = \"acme\"\nwrite_keys = [\"wk\"]\nread_keys = [\"rk_acme\"]\ndomains = [\"acme.example\"]\n\
         goals = [{ event = \"Signed Up\" }, { page = \"/pric*\", name = \"Pricing\" }]\n\
         [[tenants]]\nid = \"globex\"\nwrite_keys = [\"wk2\"]\nread_keys = [\"rk_globex\"]\n",
    )
    .unwrap();
    Arc::new(AppState::offline(tenants, &url, &database))
}

async fn v2(state: &Arc<AppState>, key: &str, body: Value) -> (u16, Value) {
    common::query_v2(state, key, &body).await
}

fn both_days() -> Value {
    json!(["2026-01-10", "2026-01-11"])
}

#[tokio::test]
async fn v2_answers_plausibles_documented_queries() {
    let state = fixture().await;
    // Aggregate, named by domain.
    let (status, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme.example", "date_range": both_days(),
        "metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration", "views_per_visit"],
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([{"dimensions": [], "metrics": [3, 3, 4, 5, 33, 120, 1.33]}])
    );
    assert_eq!(
        body["query"]["date_range"],
        json!(["2026-01-10T00:00:00+00:00", "2026-01-11T23:59:59+00:00"])
    );
    assert_eq!(body["query"]["order_by"], json!([["visitors", "desc"]]));

    // Breakdown by page, with total rows and pagination (Plausible's `pagination` example).
    let (status, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme", "date_range": both_days(), "metrics": ["visitors", "pageviews", "percentage", "bounce_rate"],
        "dimensions": ["event:page"], "include": {"total_rows": true}, "pagination": {"limit": 1, "offset": 1},
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    // `/pricing`: v1 and v3, two page views, 2 of 3 visitors; one visit entered there (s3),
    // not a bounce. `/` comes first (same visitors, ordered by name).
    assert_eq!(
        body["results"],
        json!([{"dimensions": ["/pricing"], "metrics": [2, 2, 66.7, 0]}])
    );
    assert_eq!(body["meta"]["total_rows"], json!(2));

    // Time labels, days in order, with the empty day labelled too.
    let (status, body) = v2(
        &state,
        "rk_acme",
        json!({
            "site_id": "acme", "date_range": ["2026-01-09", "2026-01-11"], "metrics": ["visitors"],
            "dimensions": ["time:day"], "include": {"time_labels": true},
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"dimensions": ["2026-01-10"], "metrics": [2]},
            {"dimensions": ["2026-01-11"], "metrics": [1]},
        ])
    );
    assert_eq!(
        body["meta"]["time_labels"],
        json!(["2026-01-09", "2026-01-10", "2026-01-11"])
    );

    // A visit filter keeps whole visits; an event filter keeps matching events for event
    // metrics and the visits that contain one for visit metrics.
    let (_, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme", "date_range": both_days(), "metrics": ["pageviews", "visits", "bounce_rate"],
        "filters": [["is", "visit:utm_source", ["news"]]],
    }))
    .await;
    assert_eq!(body["results"][0]["metrics"], json!([2, 1, 0]), "{body}");
    let (_, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme", "date_range": both_days(), "metrics": ["pageviews", "visits", "bounce_rate"],
        "filters": [["is", "event:page", ["/"]]],
    }))
    .await;
    assert_eq!(body["results"][0]["metrics"], json!([2, 2, 50]), "{body}");
    let (_, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme", "date_range": both_days(), "metrics": ["visitors"],
        "filters": [["has_done", ["is", "event:name", ["Signed Up"]]], ["contains", "event:page", ["PRIC"], {"case_sensitive": false}]],
    }))
    .await;
    assert_eq!(body["results"][0]["metrics"], json!([1]), "{body}");

    // Comparison with the two days before: nothing then.
    let (_, body) = v2(
        &state,
        "rk_acme",
        json!({
            "site_id": "acme", "date_range": both_days(), "metrics": ["visitors", "bounce_rate"],
            "include": {"comparisons": {"mode": "previous_period"}},
        }),
    )
    .await;
    assert_eq!(
        body["results"][0]["comparison"],
        json!({"dimensions": [], "metrics": [0, 0], "change": [100, null]}),
        "{body}"
    );
    assert_eq!(
        body["meta"]["comparison_date_range"],
        json!(["2026-01-08T00:00:00+00:00", "2026-01-09T23:59:59+00:00"])
    );
}

#[tokio::test]
async fn v2_errors_name_the_field_as_plausibles_do() {
    let state = fixture().await;
    let base = json!({"site_id": "acme", "date_range": "7d", "metrics": ["visitors"]});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    for (body, message) in [
        (
            with("metrics", json!(["visitors", "foo"])),
            "#/metrics/1: Invalid metric \"foo\"",
        ),
        (
            with("metrics", json!(["time_on_page"])),
            "#/metrics/0: Metric \"time_on_page\" is not served by this gateway",
        ),
        (
            with("metrics", json!([])),
            "#/metrics: Expected a minimum of 1 items but got 0.",
        ),
        (
            with("date_range", json!("7days")),
            "#/date_range: Invalid date range \"7days\"",
        ),
        (
            with("dimensions", json!(["visit:foo"])),
            "#/dimensions/0: Invalid dimension \"visit:foo\"",
        ),
        (
            with("filters", json!([["exists?", "event:name", ["foo"]]])),
            "#/filters/0: Invalid filter [\"exists?\",\"event:name\",[\"foo\"]]",
        ),
        (
            with("filters", json!([["matches", "event:page", ["(unclosed"]]])),
            "#/filters/0/2/0: Invalid RE2 pattern",
        ),
        (
            with("order_by", json!([["pageviews", "desc"]])),
            "Entry is not a queried metric or dimension.",
        ),
        (
            with("filters", json!([["matches", "event:page", ["(?x)a b"]]])),
            "#/filters/0/2/0: Invalid RE2 pattern",
        ),
        (
            with("date_range", json!(["+262142-12-31", "+262142-12-31"])),
            "#/date_range: the range is outside 1970-2105",
        ),
        (
            with("dimensions", json!(["time:minute"])),
            "#/dimensions: time:minute can be queried over at most 48 hours",
        ),
        (
            with("timezone", json!("Mars/Olympus")),
            "#/timezone: Invalid time zone",
        ),
        (
            with("include", json!({"time_labels": true})),
            "#/include/time_labels: Invalid include.time_labels: requires a time dimension.",
        ),
        (
            with("tenant", json!("globex")),
            "#/tenant: Unknown property",
        ),
        // Not in Plausible's v2 reference (shortcuts end today); accepted silently before.
        (
            with("date", json!("2024-05-01")),
            "#/date: Unknown property",
        ),
    ] {
        let (status, answer) = v2(&state, "rk_acme", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(message) || error.contains(message),
            "{body}: {error}"
        );
    }
    let mut bounce_by_name = with("metrics", json!(["bounce_rate"]));
    bounce_by_name["dimensions"] = json!(["event:name"]);
    let (status, answer) = v2(&state, "rk_acme", bounce_by_name).await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap()),
        (
            400,
            "#/dimensions: Session metric(s) `bounce_rate` cannot be queried along with event dimension(s) `event:name`"
        )
    );
    // Another tenant's site, or an unknown one, is the same 401 as a wrong key.
    for (key, site) in [
        ("rk_acme", "globex"),
        ("rk_acme", "nobody.example"),
        ("wrong", "acme"),
    ] {
        let (status, answer) = v2(&state, key, with("site_id", json!(site))).await;
        assert_eq!(status, 401, "{key} {site}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid API key or site ID.")
        );
    }
}

/// Runs `code` with the PyPI client `plausible-mcp` pointed at `base_url`, its telemetry
/// switched off before it is imported; returns what it prints.
fn plausible_mcp(base_url: &str, code: &str) -> String {
    let sdk_dir = std::env::var("CLICKSTREAM_SDK_DIR")
        .expect("CLICKSTREAM_SDK_DIR is not set: run the tests with deploy/test.sh, which installs the clients");
    let home = tempfile_dir();
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .env("PYTHONPATH", format!("{sdk_dir}/python"))
        .env("DO_NOT_TRACK", "1")
        .env("MCP_TELEMETRY_OPT_OUT", "1")
        .env("HOME", &home)
        .env("PLAUSIBLE_BASE_URL", base_url)
        .env("PLAUSIBLE_API_KEY", "rk_acme")
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!("plausible-mcp-home-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

#[tokio::test]
async fn a_published_plausible_client_reads_the_v1_api() {
    let state = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, router(state)).into_future());
    let code = r#"
import json
from plausible_mcp.server import get_aggregate_stats, get_breakdown, get_timeseries, get_realtime_visitors
out = {}
out["aggregate"] = json.loads(get_aggregate_stats("acme.example", "2026-01-10,2026-01-11", ["visitors", "pageviews", "bounce_rate", "visit_duration", "visits", "views_per_visit"]))["totals"]
out["breakdown"] = json.loads(get_breakdown("https://acme.example/", "page", "2026-01-10,2026-01-11", 10))["results"]
out["timeseries"] = json.loads(get_timeseries("acme.example", "2026-01-09,2026-01-11"))["timeseries"]
out["realtime"] = json.loads(get_realtime_visitors("acme.example"))["realtime_visitors"]
print(json.dumps(out))
"#;
    let printed = tokio::task::spawn_blocking(move || plausible_mcp(&base_url, code))
        .await
        .unwrap();
    server.abort();
    let out: Value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|_| panic!("the client printed {printed}"));
    assert_eq!(
        out["aggregate"],
        json!({"visitors": 3, "pageviews": 4, "bounce_rate": 33, "visit_duration": 120, "visits": 3, "views_per_visit": 1.33})
    );
    assert_eq!(
        out["breakdown"],
        json!([{"page": "/", "visitors": 2}, {"page": "/pricing", "visitors": 2}])
    );
    assert_eq!(
        out["timeseries"],
        json!([{"date": "2026-01-09", "visitors": 0}, {"date": "2026-01-10", "visitors": 2}, {"date": "2026-01-11", "visitors": 1}])
    );
    assert_eq!(out["realtime"], json!(1));
}

async fn get(state: &Arc<AppState>, path: &str) -> Value {
    let response = router(state.clone())
        .oneshot(
            Request::get(path)
                .header(header::AUTHORIZATION, "Bearer rk_acme")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The same question through the dashboard's overview, v2 and v1: the same numbers, filters
/// included (the overview's session metrics once ignored the page filter).
#[tokio::test]
async fn every_door_gives_the_same_numbers() {
    let state = fixture().await;
    let (from, to) = (DAY1_MS / 1000, DAY1_MS / 1000 + 2 * 86_400);
    // Visitors, page views, visits, bounce rate, visit duration, by hand: all three visits;
    // the visits with a view of `/` (s1, s2: one bounce, 60 s and 0 s); the `news` visit (s1,
    // two page views).
    for (overview_filter, v2_filters, v1_filter, expected) in [
        ("", json!([]), "", json!([3, 4, 3, 33, 120])),
        (
            "&path=/",
            json!([["is", "event:page", ["/"]]]),
            "&filters=event:page%3D%3D/",
            json!([2, 2, 2, 50, 30]),
        ),
        (
            "&utm_source=news",
            json!([["is", "visit:utm_source", ["news"]]]),
            "&filters=visit:utm_source%3D%3Dnews",
            json!([1, 2, 1, 0, 60]),
        ),
    ] {
        let overview = get(
            &state,
            &format!("/api/overview?from={from}&to={to}{overview_filter}"),
        )
        .await;
        let current = &overview["current"];
        let (_, v2_body) = v2(
            &state,
            "rk_acme",
            json!({
                "site_id": "acme", "date_range": both_days(), "filters": v2_filters,
                "metrics": ["visitors", "pageviews", "visits", "bounce_rate", "visit_duration"],
            }),
        )
        .await;
        let v1_body = get(&state, &format!(
            "/api/v1/stats/aggregate?site_id=acme&period=custom&date=2026-01-10,2026-01-11&metrics=visitors,pageviews,visits,bounce_rate,visit_duration{v1_filter}"
        ))
        .await;
        let v1 = &v1_body["results"];
        let from_overview = json!([
            current["visitors"],
            current["page_views"],
            current["sessions"],
            (current["bounce_rate"].as_f64().unwrap_or(0.0) * 100.0).round() as i64,
            current["avg_session_duration_secs"]
                .as_f64()
                .unwrap_or(0.0)
                .round() as i64,
        ]);
        let from_v1 = json!([
            v1["visitors"]["value"],
            v1["pageviews"]["value"],
            v1["visits"]["value"],
            v1["bounce_rate"]["value"],
            v1["visit_duration"]["value"]
        ]);
        assert_eq!(v2_body["results"][0]["metrics"], expected, "{v2_body}");
        // Bots asked for: the crawler's page view counts where `/` does.
        let with_bots = get(
            &state,
            &format!("/api/overview?from={from}&to={to}{overview_filter}&bots=include"),
        )
        .await;
        let bot_views = if overview_filter == "&utm_source=news" {
            0
        } else {
            1
        };
        assert_eq!(
            with_bots["current"]["page_views"].as_u64(),
            current["page_views"]
                .as_u64()
                .map(|views| views + bot_views),
            "{with_bots}"
        );
        assert_eq!(
            from_overview, v2_body["results"][0]["metrics"],
            "{overview_filter}: {overview} vs {v2_body}"
        );
        assert_eq!(
            from_v1, v2_body["results"][0]["metrics"],
            "{v1_filter}: {v1_body} vs {v2_body}"
        );
    }
}

#[tokio::test]
async fn goals_and_conversion_rates() {
    let state = fixture().await;
    // Page goal "Pricing" (/pric*): v1 and v3 viewed /pricing; "Signed Up": v3. Of 3 visitors.
    let (status, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme", "date_range": both_days(), "metrics": ["visitors", "events", "conversion_rate"],
        "dimensions": ["event:goal"],
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"dimensions": ["Pricing"], "metrics": [2, 2, 66.67]},
            {"dimensions": ["Signed Up"], "metrics": [1, 1, 33.33]},
        ])
    );
    let (_, body) = v2(&state, "rk_acme", json!({
        "site_id": "acme", "date_range": both_days(), "metrics": ["visitors", "conversion_rate"],
        "filters": [["is", "event:goal", ["Signed Up"]]], "dimensions": ["visit:utm_source"],
    }))
    .await;
    // v3's visit had no campaign; the rate is over all 3 visitors of the range.
    assert_eq!(
        body["results"],
        json!([{"dimensions": ["(not set)"], "metrics": [1, 33.33]}]),
        "{body}"
    );
    for (filters, message) in [
        (
            json!([["is", "event:goal", ["Nope"]]]),
            "The goal `Nope` is not configured for this site.",
        ),
        (
            json!([["not", ["is", "event:goal", ["Pricing"]]]]),
            "can only be filtered at the top level",
        ),
    ] {
        let (status, body) = v2(&state, "rk_acme", json!({
            "site_id": "acme", "date_range": both_days(), "metrics": ["visitors"], "filters": filters,
        }))
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(message), "{body}");
    }
    let (status, body) = v2(
        &state,
        "rk_acme",
        json!({
            "site_id": "acme", "date_range": both_days(), "metrics": ["conversion_rate"],
        }),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (
            400,
            "#/metrics: Metric `conversion_rate` can only be queried with event:goal filters or dimensions."
        )
    );
    let v1 = get(&state, "/api/v1/stats/breakdown?site_id=acme&period=custom&date=2026-01-10,2026-01-11&property=event:goal&metrics=visitors,conversion_rate").await;
    assert_eq!(
        v1["results"],
        json!([
            {"goal": "Pricing", "visitors": 2, "conversion_rate": 66.67},
            {"goal": "Signed Up", "visitors": 1, "conversion_rate": 33.33},
        ])
    );
}
