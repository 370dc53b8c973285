//! Funnels and retention on the query model against hand-computed expectations in real
//! ClickHouse: order by milliseconds, a repeated step, the conversion window, exclusions,
//! persons in progress at the "complete up to" mark, a breakdown; retention weeks in a zone.
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

/// 2026-02-02T10:00:00Z.
const T0_MS: i64 = 1_770_026_400_000;
const MINUTE_MS: i64 = 60_000;

/// Persons (one visitor each, `person-<visitor>`):
/// - a: `/pricing` at T0 + 900 ms, `Signed Up` at T0 + 100 ms (the same second, earlier).
/// - b: `/pricing`, then `Signed Up` a minute later: converts.
/// - c: `/pricing`, `Refunded` (the exclusion), then `Signed Up`: voided.
/// - d: `/pricing` at T0 + 30 min, nothing after; "complete up to" is T0 + 31 min and the
///   window 20 minutes: still in progress (the others' windows closed at T0 + 20 min).
/// - e: `/pricing` twice (two events), campaign `news`: for the repeated step.
async fn fixture() -> Arc<AppState> {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "funnels").await;
    let page = |id: &str, ms: i64, who: &str| {
        Event::new("acme", id, "page", T0_MS + ms, who, &format!("s-{who}")).path("/pricing")
    };
    let track = |id: &str, ms: i64, who: &str, name: &str| {
        Event::new("acme", id, "track", T0_MS + ms, who, &format!("s-{who}"))
            .path("/pricing")
            .name(name)
    };
    let events = vec![
        page("a1", 900, "a"),
        track("a2", 100, "a", "Signed Up"),
        page("b1", 0, "b"),
        track("b2", MINUTE_MS, "b", "Signed Up"),
        page("c1", 0, "c"),
        track("c2", MINUTE_MS, "c", "Refunded"),
        track("c3", 2 * MINUTE_MS, "c", "Signed Up"),
        page("d1", 30 * MINUTE_MS, "d"),
        page("e1", 0, "e"),
        page("e2", 5 * MINUTE_MS, "e"),
    ];
    let visits: Vec<Visit> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|who| {
            let own: Vec<Event> = events
                .iter()
                .filter(|e| e.anonymous_id == *who)
                .cloned()
                .collect();
            Visit::of(&own, if *who == "e" { "news" } else { "" })
        })
        .collect();
    load(&http, &url, &database, &events, &visits).await;
    common::sql(&http, &url, &format!(
        "INSERT INTO {database}._progress (tenant, complete_until_ms, epoch, updated_at) VALUES ('acme', {}, 1, now())",
        T0_MS + 31 * MINUTE_MS
    ))
    .await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid = \"acme\"\nwrite_keys = [\"wk\"]\nread_keys = [\"rk_acme\"]\n",
    )
    .unwrap();
    Arc::new(AppState::offline(tenants, &url, &database))
}

async fn funnel(state: &Arc<AppState>, query: &str) -> Value {
    let (from, to) = (T0_MS / 1000 - 60, T0_MS / 1000 + 2 * 3600);
    let response = router(state.clone())
        .oneshot(
            Request::get(format!(
                "/api/funnel?from={from}&to={to}&{}",
                query.replace(' ', "%20")
            ))
            .header(header::AUTHORIZATION, "Bearer rk_acme")
            .body(Body::empty())
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{query}");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn counts(body: &Value) -> Vec<(u64, u64)> {
    body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["persons"].as_u64().unwrap(),
                s["in_progress"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn funnels_order_by_milliseconds_exclude_and_know_who_is_still_in_progress() {
    let state = fixture().await;
    let window = 20 * MINUTE_MS / 1000;
    // a's sign-up came 800 ms before its page view: not converted. b and c converted; d is
    // in progress (its window is open at the mark); a, e are dropped off (windows closed).
    let body = funnel(
        &state,
        &format!("steps=page:/pricing,event:Signed Up&window={window}"),
    )
    .await;
    assert_eq!(counts(&body), vec![(5, 1), (2, 0)], "{body}");
    assert_eq!(body["complete_until_ms"], json!(T0_MS + 31 * MINUTE_MS));
    // Excluding `Refunded`: c's attempt is void and c leaves the funnel.
    let body = funnel(
        &state,
        &format!("steps=page:/pricing,event:Signed Up&window={window}&exclude=event:Refunded"),
    )
    .await;
    assert_eq!(counts(&body), vec![(4, 1), (1, 0)], "{body}");
    assert_eq!(body["excluded"], json!(1));
    // A repeated step needs two events: only e viewed /pricing twice.
    let body = funnel(
        &state,
        &format!("steps=page:/pricing,page:/pricing&window={window}"),
    )
    .await;
    assert_eq!(counts(&body), vec![(5, 1), (1, 0)], "{body}");
    // A window of 30 s: b's sign-up a minute later no longer counts.
    let body = funnel(&state, "steps=page:/pricing,event:Signed Up&window=30").await;
    assert_eq!(counts(&body)[1].0, 0, "{body}");
    // By the visit's campaign: e alone is `news`, everyone else empty.
    let body = funnel(
        &state,
        &format!("steps=page:/pricing,event:Signed Up&window={window}&breakdown=visit:utm_source"),
    )
    .await;
    let groups: Vec<(String, u64)> = body["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["value"].as_str().unwrap().to_owned(),
                g["steps"][0]["persons"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![(String::new(), 4), ("news".to_owned(), 1)],
        "{body}"
    );
}

/// Retention weeks are local: 2026-02-01 is a Sunday. A person active at 20:00 UTC that
/// Sunday and again at 20:00 UTC on Monday is active in two UTC weeks, but in Kolkata
/// (UTC+5:30) both are Monday (01:30 on the 2nd, 01:30 on the 3rd): one week.
#[tokio::test]
async fn retention_weeks_follow_the_time_zone() {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "retention").await;
    let sunday_20h = 1_769_976_000_000;
    let events = vec![
        Event::new("acme", "r1", "page", sunday_20h, "p", "s1").path("/"),
        Event::new("acme", "r2", "page", sunday_20h + 24 * 3_600_000, "p", "s2").path("/"),
    ];
    let visits = vec![Visit::of(&events[..1], ""), Visit::of(&events[1..], "")];
    load(&http, &url, &database, &events, &visits).await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid = \"acme\"\nwrite_keys = [\"wk\"]\nread_keys = [\"rk_acme\"]\n",
    )
    .unwrap();
    let state = Arc::new(AppState::offline(tenants, &url, &database));
    let range = format!(
        "from={}&to={}",
        sunday_20h / 1000 - 7 * 86_400,
        sunday_20h / 1000 + 14 * 86_400
    );
    let mut weeks = Vec::new();
    for zone in ["UTC", "Asia/Kolkata"] {
        let response = router(state.clone())
            .oneshot(
                Request::get(format!("/api/retention?{range}&timezone={zone}"))
                    .header(header::AUTHORIZATION, "Bearer rk_acme")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let cohorts: Vec<(String, usize)> = body["cohorts"]
            .as_array()
            .unwrap_or_else(|| panic!("{zone}: {body}"))
            .iter()
            .map(|c| {
                (
                    c["week"].as_str().unwrap().to_owned(),
                    c["retained"].as_array().unwrap().len(),
                )
            })
            .collect();
        weeks.push(cohorts);
    }
    // UTC: the cohort of the week of Monday 2026-01-26, active again a week later.
    assert_eq!(weeks[0], vec![("2026-01-26".to_owned(), 2)]);
    // Kolkata: the week of Monday 2026-02-02, nothing after it.
    assert_eq!(weeks[1], vec![("2026-02-02".to_owned(), 1)]);
}
