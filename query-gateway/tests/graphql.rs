//! GraphQL at `/api/graphql` over the shop's data: each query and its `POST /api/v2/query`
//! twin give the same numbers; the tenant is the key's; the model's validation reaches
//! GraphQL's `errors`; introspection works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use clickstream_query_gateway::{AppState, Clock};
use common::shop::{self, NOW_SECS};
use schemas::tenants::Tenants;
use serde_json::{Value, json};

async fn graphql(
    state: &Arc<AppState>,
    key: Option<&str>,
    query: &str,
    variables: Value,
) -> (u16, Value) {
    let body = json!({"query": query, "variables": variables});
    common::post_json(state, key, "/api/graphql", &body).await
}

const STATS: &str = "query Stats($input: StatsInput!) { stats(input: $input) { metrics dimensions dateRange completeUntil rows { dimensions metrics comparison { metrics change } } } }";

/// The v2 twin's rows, as GraphQL's: dimensions as strings, metrics as numbers.
fn v2_rows(body: &Value) -> Value {
    let rows: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let text = |v: &Value| v.as_array().unwrap().iter().map(|d| d.as_str().map_or(d.to_string(), str::to_owned)).collect::<Vec<_>>();
            let numbers = |v: &Value| v.as_array().unwrap().iter().map(|n| n.as_f64()).collect::<Vec<_>>();
            json!({
                "dimensions": text(&row["dimensions"]),
                "metrics": numbers(&row["metrics"]),
                "comparison": row.get("comparison").map(|c| json!({"metrics": numbers(&c["metrics"]), "change": numbers(&c["change"])})),
            })
        })
        .collect();
    json!(rows)
}

fn graphql_rows(body: &Value) -> Value {
    let rows: Vec<Value> = body["data"]["stats"]["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {body}"))
        .iter()
        .map(|row| {
            let numbers = |v: &Value| v.as_array().unwrap().iter().map(|n| n.as_f64()).collect::<Vec<_>>();
            json!({
                "dimensions": row["dimensions"],
                "metrics": numbers(&row["metrics"]),
                "comparison": if row["comparison"].is_null() { Value::Null } else { json!({"metrics": numbers(&row["comparison"]["metrics"]), "change": numbers(&row["comparison"]["change"])}) },
            })
        })
        .collect();
    json!(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_and_the_stats_api_give_the_same_numbers() {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "graphql").await;
    shop::load(&http, &url, &database).await;
    let mut state = AppState::offline(Tenants::parse(shop::TENANTS).unwrap(), &url, &database);
    state.clock = Clock::fixed(NOW_SECS);
    let state = Arc::new(state);

    let twins = [
        (
            json!({"metrics": ["VISITORS", "VISITS", "BOUNCE_RATE", "VIEWS_PER_VISIT", "VISIT_DURATION"], "dateRange": "30d"}),
            json!({"metrics": ["visitors", "visits", "bounce_rate", "views_per_visit", "visit_duration"], "date_range": "30d"}),
        ),
        (
            json!({"metrics": ["VISITORS", "PAGEVIEWS"], "dateRange": "month", "dimensions": ["visit:country"], "filters": [["is", "visit:device", ["Mobile"]]], "comparison": "PREVIOUS_PERIOD", "limit": 5}),
            json!({"metrics": ["visitors", "pageviews"], "date_range": "month", "dimensions": ["visit:country"], "filters": [["is", "visit:device", ["Mobile"]]], "include": {"comparisons": {"mode": "previous_period"}}, "pagination": {"limit": 5}}),
        ),
        (
            json!({"metrics": ["EVENTS"], "dateRange": "2026-11-01", "to": "2026-11-14", "dimensions": ["time:day"], "filters": [["is", "event:name", ["Signed Up"]]]}),
            json!({"metrics": ["events"], "date_range": ["2026-11-01", "2026-11-14"], "dimensions": ["time:day"], "filters": [["is", "event:name", ["Signed Up"]]]}),
        ),
        (
            json!({"metrics": ["CONVERSION_RATE"], "dateRange": "year", "dimensions": ["event:goal"], "timezone": "America/New_York"}),
            json!({"metrics": ["conversion_rate"], "date_range": "year", "dimensions": ["event:goal"], "timezone": "America/New_York"}),
        ),
    ];
    for (input, mut v2) in twins {
        let (status, body) = graphql(&state, Some("rk_shop"), STATS, json!({"input": input})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["errors"].is_null(), "{input}: {body}");
        v2["site_id"] = json!("shop");
        let (v2_status, twin) = common::query_v2(&state, "rk_shop", &v2).await;
        assert_eq!(v2_status, 200, "{twin}");
        let rows = graphql_rows(&body);
        assert!(!rows.as_array().unwrap().is_empty(), "{input}: no rows");
        assert_eq!(rows, v2_rows(&twin), "{input}");
        assert_eq!(
            body["data"]["stats"]["dateRange"],
            twin["query"]["date_range"]
        );
        assert_eq!(
            body["data"]["stats"]["completeUntil"],
            twin["meta"]["complete_until"]
        );
    }

    // The tenant is the key's: globex's key sees globex's visitors, never shop's.
    let input = json!({"input": {"metrics": ["VISITORS"], "dateRange": "all", "dimensions": ["event:page"]}});
    let (_, globex) = graphql(&state, Some("rk_globex"), STATS, input.clone()).await;
    let pages: Vec<&Value> = globex["data"]["stats"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["dimensions"][0])
        .collect();
    assert!(
        !pages.is_empty() && pages.iter().all(|p| *p == "/store" || *p == "/careers"),
        "{globex}"
    );
    let (_, site) = graphql(
        &state,
        Some("rk_globex"),
        "{ site { id timeZone } }",
        json!({}),
    )
    .await;
    assert_eq!(site["data"]["site"]["id"], "globex");
    // No key: 401, as every endpoint.
    let (status, _) = graphql(&state, None, STATS, input).await;
    assert_eq!(status, 401);
    // The model's validation, in GraphQL's errors: the v2 message naming the field.
    let (status, body) = graphql(&state, Some("rk_shop"), STATS, json!({"input": {"metrics": ["BOUNCE_RATE"], "dateRange": "30d", "dimensions": ["event:name"]}})).await;
    assert_eq!(status, 200);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("#/"),
        "{body}"
    );
    let (_, body) = graphql(
        &state,
        Some("rk_shop"),
        STATS,
        json!({"input": {"metrics": ["VISITORS"], "dateRange": "yesterday-ish"}}),
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("date_range"),
        "{body}"
    );
    // Introspection is on: the schema documents itself.
    let (_, schema) = graphql(
        &state,
        Some("rk_shop"),
        "{ __type(name: \"Metric\") { enumValues { name } } }",
        json!({}),
    )
    .await;
    let values: Vec<&str> = schema["data"]["__type"]["enumValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        values.contains(&"VISITORS") && values.contains(&"CONVERSION_RATE"),
        "{schema}"
    );
    common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
}
