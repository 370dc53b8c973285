//! The REST API against real ClickHouse, in-process and over a socket: values checked against
//! hand-computed expectations, tenant isolation, bad parameters, the OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use axum::http::StatusCode;
use clickstream_query_gateway::{
    ADMIN_PATHS, API_PATHS, ASK_PATH, GRAPHQL_PATH, LIVE_PATH, SHARE_LINK_PATH, SITE_PATH,
    V1_PATHS, V2_QUERY_PATH, openapi, router,
};
use common::{DAY, T, fixture};
use serde_json::{Value, json};

fn range() -> String {
    format!("from={T}&to={}", T + DAY)
}

#[tokio::test]
async fn values_match_hand_computed_expectations() {
    let f = fixture(T).await;
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
    // Ranges that start inside an hour: the partial hour comes from the events, the whole
    // hours from the rollup. From T+15 s, e1 (T+10 s) drops out.
    for (to, expected) in [
        (T + DAY, json!([3, 2, 2, 3])),
        // Within the first hour only: e4 and e2.
        (T + 100, json!([2, 1, 1, 2])),
    ] {
        let (status, body) = f
            .get(
                Some("rk_acme"),
                &format!("/api/overview?from={}&to={to}", T + 15),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let c = &body["current"];
        assert_eq!(
            json!([c["visitors"], c["persons"], c["page_views"], c["events"]]),
            expected,
            "to={to}: {body}"
        );
    }
    // A filter bypasses the rollup.
    let (_, filtered) = f
        .get(
            Some("rk_acme"),
            &format!("/api/overview?{}&path=/b", range()),
        )
        .await;
    let c = &filtered["current"];
    assert_eq!(
        json!([c["visitors"], c["persons"], c["page_views"], c["events"]]),
        json!([1, 1, 1, 1]),
        "{filtered}"
    );
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

/// Issue 13, item 5, as the dashboard sees it: screens count as page views everywhere (totals,
/// series, top pages, the page filter, funnel steps) and an identify is not activity. (The
/// bounce rate sums the sessions' `is_bounce`, which the engine decides: its own tests check
/// that verdict.)
#[tokio::test]
async fn screens_are_page_views_and_identifies_are_not_activity() {
    let f = fixture(T).await;
    let day = T + 20 * DAY;
    let (status, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/overview?from={day}&to={}", day + DAY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c = &body["current"];
    // m1, m2 (screens), m4 (page), m5 (track); not m3 (identify).
    assert_eq!(
        json!([
            c["visitors"],
            c["persons"],
            c["page_views"],
            c["events"],
            c["sessions"],
            c["bounce_rate"]
        ]),
        json!([2, 2, 3, 4, 2, 0.0]),
        "{body}"
    );
    // From inside the first hour: the partial hour comes from the events table.
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/overview?from={}&to={}", day + 15, day + DAY),
        )
        .await;
    let c = &body["current"];
    assert_eq!(
        json!([c["visitors"], c["persons"], c["page_views"], c["events"]]),
        json!([2, 2, 2, 3]),
        "{body}"
    );
    let range = format!("from={day}&to={}", day + DAY);
    let (_, body) = f
        .get(Some("rk_acme"), &format!("/api/top/pages?{range}"))
        .await;
    assert_eq!(
        body["entries"],
        json!([{"key": "/a", "value": 1}, {"key": "Home", "value": 1}, {"key": "Settings", "value": 1}])
    );
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/timeseries?{range}&interval=hour&metric=page_views"),
        )
        .await;
    assert_eq!(body["points"], json!([{"time": day, "value": 3}]));
    let (_, body) = f
        .get(Some("rk_acme"), &format!("/api/overview?{range}&path=Home"))
        .await;
    let c = &body["current"];
    assert_eq!(
        json!([c["visitors"], c["page_views"], c["events"]]),
        json!([1, 1, 1]),
        "the page filter finds a screen by its name: {body}"
    );
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/funnel?{range}&steps=page:Home,page:Settings"),
        )
        .await;
    let reached: Vec<Value> = body["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("steps in {body}"))
        .iter()
        .map(|step| step["persons"].clone())
        .collect();
    assert_eq!(reached, [json!(1), json!(1)], "{body}");
    f.drop_database().await;
}

#[tokio::test]
async fn funnels_retention_person_sessions_and_progress() {
    let f = fixture(T).await;
    let persons = |body: &Value| -> Vec<Value> {
        body["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("steps in {body}"))
            .iter()
            .map(|step| step["persons"].clone())
            .collect()
    };
    // p1 viewed /a, then signed up 10 s later; p3 only viewed /b.
    let (status, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/funnel?{}&steps=page:/a,event:Signup", range()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(persons(&body), [json!(1), json!(1)], "{body}");
    assert_eq!(body["steps"][1]["conversion_from_previous"], 1.0);
    assert_eq!(body["steps"][1]["kind"], "event");
    assert_eq!(body["steps"][1]["value"], "Signup");
    // Order matters, and so does the window.
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/funnel?{}&steps=event:Signup,page:/b", range()),
        )
        .await;
    assert_eq!(persons(&body), [json!(1), json!(0)], "{body}");
    assert_eq!(body["steps"][1]["conversion_from_first"], 0.0);
    let (_, body) = f
        .get(
            Some("rk_acme"),
            &format!(
                "/api/funnel?{}&steps=page:/a,event:Signup&window=5",
                range()
            ),
        )
        .await;
    assert_eq!(persons(&body), [json!(1), json!(0)], "{body}");
    let (_, body) = f
        .get(
            Some("rk_globex"),
            &format!("/api/funnel?{}&steps=page:/a,event:Signup", range()),
        )
        .await;
    assert_eq!(
        persons(&body),
        [json!(0), json!(0)],
        "globex has no /a: {body}"
    );

    // Week of 2024-04-29: p9, p1 and p3; p1 again the week after.
    let (status, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/retention?from={}&to={}", T - DAY, T + 10 * DAY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["cohorts"],
        json!([{"week": "2024-04-29", "persons": 3, "retained": [
            {"persons": 3, "share": 1.0}, {"persons": 1, "share": 1.0 / 3.0}]}]),
        "{body}"
    );
    let (_, body) = f
        .get(
            Some("rk_globex"),
            &format!("/api/retention?from={}&to={}", T - DAY, T + 10 * DAY),
        )
        .await;
    assert_eq!(body["cohorts"][0]["persons"], 1, "{body}");

    // p1's sessions, newest first, as their newest versions say; s3 was merged away, s4
    // moved to another person.
    let (status, body) = f
        .get(
            Some("rk_acme"),
            &format!("/api/persons/p1/sessions?{}", range()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&Value> = body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| &s["session_id"])
        .collect();
    assert_eq!(ids, [&json!("s2"), &json!("s1")], "{body}");
    assert_eq!(body["sessions"][0]["is_bounce"], 1, "{body}");
    assert_eq!(body["sessions"][0]["entry_referrer"], "", "{body}");
    let (_, body) = f
        .get(
            Some("rk_globex"),
            &format!("/api/persons/p1/sessions?{}", range()),
        )
        .await;
    assert_eq!(
        body["sessions"],
        json!([]),
        "another tenant's person: {body}"
    );

    let (status, body) = f.get(Some("rk_acme"), "/api/progress").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["complete_until_ms"], T * 1000 + 9_000, "{body}");
    assert_eq!(body["complete_until"], "2024-05-01T00:00:09.000Z");
    assert_eq!(body["stalled"], Value::Null, "a healthy pipeline: {body}");
    let (_, body) = f.get(Some("rk_globex"), "/api/progress").await;
    assert_eq!(body["complete_until_ms"], Value::Null, "{body}");
    f.drop_database().await;
}

#[tokio::test]
async fn a_key_never_sees_another_tenants_rows() {
    let f = fixture(T).await;
    // Whole JSON strings where a secret is a part of the other tenant's (`globex-news`).
    let acme_only = ["/a", "/b", "Signup", "\"news\"", "g.com"];
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
        "/api/top/pages?{wide}&limit=1000".to_owned(),
        "/api/retention?{wide}".to_owned(),
        "/api/persons/p1/sessions?{wide}".to_owned(),
        "/api/persons/q1/sessions?{wide}".to_owned(),
        "/api/v1/stats/aggregate?site_id={site}&period=custom&date=2024-04-01,2024-06-30&metrics=visitors,pageviews,visits".to_owned(),
        "/api/v1/stats/breakdown?site_id={site}&period=custom&date=2024-04-01,2024-06-30&property=event:page&limit=1000".to_owned(),
        "/api/v1/stats/breakdown?site_id={site}&period=custom&date=2024-04-01,2024-06-30&property=event:name".to_owned(),
        "/api/v1/stats/breakdown?site_id={site}&period=custom&date=2024-04-01,2024-06-30&property=visit:utm_source".to_owned(),
        "/api/v1/stats/breakdown?site_id={site}&period=custom&date=2024-04-01,2024-06-30&property=visit:referrer".to_owned(),
        "/api/v1/stats/timeseries?site_id={site}&period=custom&date=2024-04-01,2024-06-30".to_owned(),
        "/api/progress".to_owned(),
    ];
    // Every query is answered (a refused query would check nothing): the wide range covers
    // every row of the fixture within the 366 days one query may read.
    let wide = format!("from={}&to={}", T - 30 * DAY, T + 300 * DAY);
    for query in &queries {
        let query = query.replace("{range}", &range()).replace("{wide}", &wide);
        for (key, site, foreign) in [
            ("rk_globex", "globex", &acme_only[..]),
            ("rk_acme", "acme", &globex_only[..]),
        ] {
            let query = query.replace("{site}", site);
            let (status, body) = f.get(Some(key), &query).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            let text = body.to_string();
            for secret in foreign {
                assert!(
                    !text.contains(secret),
                    "{key} saw {secret:?} through {query}: {text}"
                );
            }
        }
    }
    // The Stats API v2, with every dimension that holds a name or a path.
    for dimension in [
        "event:page",
        "event:name",
        "visit:utm_source",
        "visit:referrer",
        "visit:entry_page",
    ] {
        // A visit metric is not broken down by an event's name.
        let metrics = if dimension == "event:name" {
            json!(["visitors", "events"])
        } else {
            json!(["visitors", "visits"])
        };
        for (key, site, foreign) in [
            ("rk_globex", "globex", &acme_only[..]),
            ("rk_acme", "acme", &globex_only[..]),
        ] {
            let body = json!({
                "site_id": site, "metrics": metrics, "dimensions": [dimension],
                "date_range": ["2024-04-01", "2024-06-30"],
            });
            let (status, answer) = f.post(Some(key), "/api/v2/query", &body).await;
            assert_eq!(status, StatusCode::OK, "{body}: {answer}");
            assert!(
                answer["results"].as_array().is_some_and(|r| !r.is_empty()),
                "{key} {dimension}: {answer}"
            );
            let text = answer.to_string();
            for secret in foreign {
                assert!(
                    !text.contains(secret),
                    "{key} saw {secret:?} through v2 {dimension}: {text}"
                );
            }
        }
    }
    // Ranges aligned to hours and not: globex's own numbers.
    for range in [range(), format!("from={}&to={}", T + 5, T + DAY - 5)] {
        let (_, body) = f
            .get(Some("rk_globex"), &format!("/api/overview?{range}"))
            .await;
        assert_eq!(
            (
                body["current"]["visitors"].clone(),
                body["current"]["events"].clone()
            ),
            (json!(1), json!(2)),
            "{range}: {body}"
        );
    }
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
    let f = fixture(T).await;
    for (query, parameter) in [
        ("/api/overview?from=yesterday", "from"),
        ("/api/overview?from=10&to=5", "from"),
        ("/api/timeseries?interval=fortnight", "interval"),
        ("/api/timeseries?metric=revenue", "metric"),
        ("/api/top/pages?limit=0", "limit"),
        ("/api/top/pages?limit=many", "limit"),
        ("/api/overview?colour=blue", "colour"),
        ("/api/funnel", "steps"),
        ("/api/funnel?steps=page:/a", "steps"),
        ("/api/funnel?steps=page:/a,click:buy", "steps"),
        // Known parameters another endpoint takes are refused, not ignored.
        ("/api/overview?steps=page:/a,page:/b", "steps"),
        ("/api/progress?from=1", "from"),
        ("/api/timeseries?limit=5", "limit"),
        ("/api/overview?bots=maybe", "bots"),
        ("/api/funnel?steps=page:/a,page:", "steps"),
        ("/api/funnel?steps=page:/a,page:/b&window=0", "window"),
        ("/api/persons/p1/sessions?limit=5000", "limit"),
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
    let f = fixture(T).await;
    let document: Value = serde_json::to_value(openapi::document()).expect("serializes");
    let mut documented: Vec<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort();
    let mut routed = API_PATHS.to_vec();
    routed.push(LIVE_PATH);
    routed.push(ASK_PATH);
    routed.push(SHARE_LINK_PATH);
    routed.push(SITE_PATH);
    routed.push(GRAPHQL_PATH);
    routed.extend(ADMIN_PATHS);
    routed.push(V2_QUERY_PATH);
    routed.extend(V1_PATHS);
    routed.sort();
    assert_eq!(
        documented, routed,
        "every route is documented and every documented path is routed"
    );

    // The parameters a REST endpoint accepts are the documented ones: an unknown one is
    // refused with the documented list.
    for path in API_PATHS {
        let operation = &document["paths"][path]["get"];
        let documented: Vec<&str> = operation["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter(|parameter| parameter["in"] == "query")
            .map(|parameter| parameter["name"].as_str().expect("name"))
            .collect();
        let concrete = path.replace("{kind}", "pages").replace("{person_id}", "p1");
        let (status, body) = f
            .get(Some("rk_acme"), &format!("{concrete}?undocumented=1"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(body["error"]["parameter"], "undocumented", "{path}");
        let message = body["error"]["message"].as_str().expect("message");
        if documented.is_empty() {
            assert!(message.contains("takes no parameters"), "{path}: {message}");
        } else {
            assert!(
                message.ends_with(&format!("(it takes {})", documented.join(", "))),
                "{path}: {message} against {documented:?}"
            );
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(axum::serve(listener, router(f.state.clone())).into_future());
    for path in API_PATHS {
        let path = path
            .replace("{kind}", "pages")
            .replace("{person_id}", "p1")
            .replace("/api/funnel", "/api/funnel?steps=page:/a,event:Signup&");
        // Progress takes no range.
        let range = if path == "/api/progress" {
            String::new()
        } else {
            range()
        };
        let response = f
            .http
            .get(format!(
                "http://{address}{path}{}{range}",
                if path.contains('?') { "" } else { "?" },
            ))
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

/// A share key opens the dashboard's numbers (REST, Plausible's APIs, the live stream) of its
/// tenant only; Ask and a person's sessions need a read key (403); the link is handed out to
/// read keys; a reload without the key revokes it at once.
#[tokio::test]
async fn a_share_key_reads_the_dashboard_only_and_is_revoked_by_a_reload() {
    let f = fixture(T).await;
    let range = format!("from={}&to={}", T, T + DAY);
    let (status, overview) = f
        .get(Some("sk_acme"), &format!("/api/overview?{range}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    let (read_status, read_overview) = f
        .get(Some("rk_acme"), &format!("/api/overview?{range}"))
        .await;
    assert_eq!(read_status, StatusCode::OK);
    assert_eq!(
        overview["current"], read_overview["current"],
        "the same numbers as the read key's"
    );
    let (status, body) = f
        .post(
            Some("sk_acme"),
            "/api/v2/query",
            &serde_json::json!({"site_id": "acme", "metrics": ["visitors"], "date_range": "all"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = f
        .post(
            Some("sk_acme"),
            "/api/v2/query",
            &serde_json::json!({"site_id": "globex", "metrics": ["visitors"], "date_range": "all"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another tenant's site: {body}"
    );
    let (status, body) = f
        .post(
            Some("sk_acme"),
            "/api/ask",
            &serde_json::json!({"question": "visitors today"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = f
        .get(
            Some("sk_acme"),
            &format!("/api/persons/p1/sessions?{range}"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, link) = f.get(Some("rk_acme"), "/api/share-link").await;
    assert_eq!(status, StatusCode::OK, "{link}");
    assert_eq!(link["path"], "/#share=sk_acme");
    let (status, site) = f.get(Some("sk_acme"), "/api/site").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(site["site_id"], "acme");
    assert_eq!(site["access"], "share");
    let (status, _) = f.get(Some("sk_acme"), "/api/share-link").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = f.get(Some("rk_globex"), "/api/share-link").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "globex has no share key");
    // What SIGHUP does in the binary: the file without the key, swapped in.
    f.state.tenants.replace(
        schemas::tenants::Tenants::parse(
            "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\nread_keys=['rk_acme']\n",
        )
        .unwrap(),
    );
    let (status, _) = f
        .get(Some("sk_acme"), &format!("/api/overview?{range}"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked share key");
    let (status, _) = f
        .get(Some("rk_acme"), &format!("/api/overview?{range}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    f.drop_database().await;
}
