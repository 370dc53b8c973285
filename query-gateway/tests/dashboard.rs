//! The dashboard driven in headless Chromium over the shop's data (`common/shop.rs`, the
//! gateway's clock fixed at its "now"): a page of the same origin holds the dashboard in an
//! iframe, clicks through it as a user would (range picker, comparison, a row as a filter, a
//! breakdown tab, a funnel built from the pickers, a CSV link, the Ask box answering and
//! refusing) and writes what the dashboard showed into its own DOM for `--dump-dom`. Every
//! number is checked against the query model asked directly; a share link is opened with no
//! read key; screenshots are kept in `target/test-output/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use clickstream_query_gateway::ask::AskLimits;
use clickstream_query_gateway::{AppState, Clock, router};
use common::chromium::{check_screenshot, run_chromium};
use common::shop::{self, NOW_SECS};
use schemas::tenants::Tenants;
use serde_json::{Value, json};

const HARNESS: &str = r##"<!doctype html><html><body style="margin:0">
<iframe id="f" src="/#key=rk_shop&live=0&range=7d" style="width:1280px;height:1400px;border:0"></iframe>
<pre id="result">pending</pre>
<script>
"use strict";
const frame = document.getElementById("f");
const doc = () => frame.contentDocument;
const steps = {};
function done() { document.getElementById("result").textContent = JSON.stringify(steps); }
function waitFor(check, then, tries = 0) {
  const value = check();
  if (value) { then(value); } else if (tries > 400) { steps.timeout = true; done(); } else { setTimeout(() => waitFor(check, then, tries + 1), 50); }
}
// The dashboard re-renders on every change: wait for its "loaded" flag to drop and rise.
function after(action, then) {
  doc().body.dataset.loaded = "pending";
  action();
  waitFor(() => doc().body.dataset.loaded === "true", then);
}
const cards = () => Object.fromEntries([...doc().querySelectorAll(".card")].map((c) => [c.dataset.metric, { value: c.dataset.value, change: c.querySelector(".change").dataset.change }]));
const rows = (panel) => [...doc().querySelectorAll(`#panel-${panel} tr.row`)].map((tr) => [...tr.children].map((td) => td.textContent));
function choose(id, value) { const select = doc().getElementById(id); select.value = value; select.dispatchEvent(new Event("change")); }
frame.addEventListener("load", () => {
  waitFor(() => doc().body.dataset.loaded === "true", () => {
    steps.initial = { cards: cards(), hash: frame.contentWindow.location.hash };
    after(() => choose("range", "30d"), () => {
      steps.range = { cards: cards(), hash: frame.contentWindow.location.hash };
      after(() => choose("compare", "previous_period"), () => {
        steps.compare = { cards: cards(), chartPrevious: doc().getElementById("chart").dataset.previous, chartPoints: doc().getElementById("chart").dataset.points };
        const germany = doc().querySelector('#panel-locations tr.row[data-value="DE"]');
        after(() => germany.click(), () => {
          steps.filter = { cards: cards(), pills: [...doc().querySelectorAll(".pill")].map((p) => p.dataset.filter), hash: frame.contentWindow.location.hash };
          after(() => doc().querySelector('#panel-devices button[data-dimension="visit:browser"]').click(), () => {
            steps.breakdown = { rows: rows("devices"), csv: decodeURIComponent(doc().querySelector('a.csv[data-panel="devices"]').href.split(",").slice(1).join(",")), download: doc().querySelector('a.csv[data-panel="devices"]').download };
            steps.view = frame.contentWindow.location.hash;
            // A funnel built by picking steps.
            choose("funnel-pick", "page:/pricing");
            after(() => doc().getElementById("funnel-add").click(), () => {
              choose("funnel-pick", "event:Signed Up");
              after(() => doc().getElementById("funnel-add").click(), () => {
                steps.funnel = [...doc().querySelectorAll("#funnel .step")].map((s) => [s.dataset.step, s.dataset.persons, s.textContent]);
                const ask = (question, then) => {
                  doc().getElementById("ask").value = question;
                  doc().getElementById("answer").dataset.state = "asking";
                  doc().getElementById("ask-form").requestSubmit();
                  waitFor(() => { const s = doc().getElementById("answer").dataset.state; return s !== "asking" && s; }, () => then({
                    state: doc().getElementById("answer").dataset.state,
                    summary: doc().querySelector("#answer .summary").textContent,
                  }));
                };
                ask("How many visitors from Germany in the last 30 days?", (answered) => {
                  steps.answered = answered;
                  ask("What was our revenue last month?", (refused) => { steps.refused = refused; done(); });
                });
              });
            });
          });
        });
      });
    });
  });
});
</script></body></html>"##;

/// The share link in a fresh browser profile: no read key anywhere.
const SHARE_HARNESS: &str = r##"<!doctype html><html><body style="margin:0">
<iframe id="f" src="/#share=sk_shop&live=0&range=30d" style="width:1280px;height:1000px;border:0"></iframe>
<pre id="result">pending</pre>
<script>
"use strict";
const frame = document.getElementById("f");
const doc = () => frame.contentDocument;
function waitFor(check, then, tries = 0) {
  const value = check();
  if (value) { then(value); } else if (tries > 400) { document.getElementById("result").textContent = "timeout"; } else { setTimeout(() => waitFor(check, then, tries + 1), 50); }
}
frame.addEventListener("load", () => waitFor(() => doc().body.dataset.loaded === "true", () => {
  document.getElementById("result").textContent = JSON.stringify({
    stored: localStorage.getItem("clickstream-read-key"),
    site: doc().getElementById("site").textContent,
    askHidden: doc().getElementById("ask-panel").classList.contains("hidden"),
    visitors: doc().querySelector('.card[data-metric="visitors"]').dataset.value,
  });
}));
</script></body></html>"##;

fn result_of(dom: &str) -> Value {
    let text = dom
        .split(r#"<pre id="result">"#)
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no result:\n{dom}"))
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("the harness did not finish: {text}"))
}

/// One v2 metric total of the shop, asked directly.
async fn total(state: &Arc<AppState>, metric: &str, range: &str, filters: Value) -> String {
    let (status, body) = common::query_v2(
        state,
        "rk_shop",
        &json!({"site_id": "shop", "metrics": [metric], "date_range": range, "filters": filters}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["results"][0]["metrics"][0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_filters_compares_breaks_down_and_shares_in_chromium() {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "dashboard").await;
    shop::load(&http, &url, &database).await;
    let tenants = shop::TENANTS.replacen(
        "read_keys=['rk_shop']",
        "read_keys=['rk_shop']\nshare_keys=['sk_shop']",
        1,
    );
    let mut state = AppState::offline(Tenants::parse(&tenants).unwrap(), &url, &database);
    state.clock = Clock::fixed(NOW_SECS);
    state.ask = common::ask_service(&url, &database, None, AskLimits::default()).0;
    let state = Arc::new(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(state.clone())
        .route(
            "/harness",
            axum::routing::get(|| async { axum::response::Html(HARNESS) }),
        )
        .route(
            "/share-harness",
            axum::routing::get(|| async { axum::response::Html(SHARE_HARNESS) }),
        );
    let server = tokio::spawn(axum::serve(listener, app).into_future());
    let output = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&output).unwrap();
    let profile =
        std::env::temp_dir().join(format!("clickstream-dashboard-{}", std::process::id()));
    let share_profile =
        std::env::temp_dir().join(format!("clickstream-share-{}", std::process::id()));
    let (dom, share_dom) = {
        let (profile, share_profile) = (profile.clone(), share_profile.clone());
        tokio::task::spawn_blocking(move || {
            let dom = run_chromium(
                &profile,
                &["--dump-dom".into(), format!("http://{address}/harness")],
            );
            let share = run_chromium(
                &share_profile,
                &[
                    "--dump-dom".into(),
                    format!("http://{address}/share-harness"),
                ],
            );
            (dom, share)
        })
        .await
        .unwrap()
    };
    let steps = result_of(&dom);
    println!("the dashboard showed: {steps:#}");
    assert!(
        steps.get("timeout").is_none(),
        "the harness timed out: {steps}"
    );

    // The range picker: 7 days, then 30, in the URL and in the numbers.
    assert_eq!(
        steps["initial"]["cards"]["visitors"]["value"]
            .as_str()
            .unwrap(),
        total(&state, "visitors", "7d", json!([])).await
    );
    assert!(
        steps["range"]["hash"]
            .as_str()
            .unwrap()
            .contains("range=30d")
    );
    for metric in ["visitors", "visits", "pageviews", "bounce_rate"] {
        assert_eq!(
            steps["range"]["cards"][metric]["value"].as_str().unwrap(),
            total(&state, metric, "30d", json!([])).await,
            "{metric}"
        );
    }
    // The comparison: a change on every card, and a second line on the chart.
    let (status, compared) = common::query_v2(
        &state,
        "rk_shop",
        &json!({"site_id": "shop", "metrics": ["visitors"], "date_range": "30d", "include": {"comparisons": {"mode": "previous_period"}}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        steps["compare"]["cards"]["visitors"]["change"]
            .as_str()
            .unwrap(),
        compared["results"][0]["comparison"]["change"][0].to_string()
    );
    assert_eq!(
        steps["compare"]["chartPrevious"],
        steps["compare"]["chartPoints"]
    );
    assert_ne!(steps["compare"]["chartPrevious"], "0");
    // A click on a country: a pill, and every number filtered.
    assert_eq!(steps["filter"]["pills"], json!(["is|visit:country|DE"]));
    let germany = json!([["is", "visit:country", ["DE"]]]);
    assert_eq!(
        steps["filter"]["cards"]["visitors"]["value"]
            .as_str()
            .unwrap(),
        total(&state, "visitors", "30d", germany.clone()).await
    );
    // A breakdown tab: browsers of German visitors, as the model breaks them down, and the CSV
    // holds exactly the rows shown.
    let (_, browsers) = common::query_v2(
        &state,
        "rk_shop",
        &json!({"site_id": "shop", "metrics": ["visitors"], "date_range": "30d", "dimensions": ["visit:browser"], "filters": germany, "pagination": {"limit": 10}, "include": {"comparisons": {"mode": "previous_period"}}}),
    )
    .await;
    let shown = steps["breakdown"]["rows"].as_array().unwrap();
    let expected = browsers["results"].as_array().unwrap();
    assert_eq!(shown.len(), expected.len(), "{shown:?}");
    assert!(!shown.is_empty());
    for (row, result) in shown.iter().zip(expected) {
        assert_eq!(row[0], result["dimensions"][0]);
        assert_eq!(
            row[1].as_str().unwrap().replace(',', ""),
            result["metrics"][0].to_string()
        );
    }
    let csv = steps["breakdown"]["csv"].as_str().unwrap();
    let csv_lines: Vec<&str> = csv.lines().collect();
    assert_eq!(csv_lines[0], "Browsers,visitors,change");
    assert_eq!(csv_lines.len(), shown.len() + 1, "{csv}");
    for (line, result) in csv_lines[1..].iter().zip(expected) {
        let change = &result["comparison"]["change"][0];
        let change = if change.is_null() {
            String::new()
        } else {
            change.to_string()
        };
        assert_eq!(
            *line,
            format!(
                "{},{},{change}",
                result["dimensions"][0].as_str().unwrap(),
                result["metrics"][0]
            )
        );
    }
    assert!(
        steps["breakdown"]["download"]
            .as_str()
            .unwrap()
            .starts_with("shop-devices-")
    );
    // The funnel built by clicking: /api/funnel's persons for the same steps and range.
    let (from, to) = (
        compared["query"]["date_range"][0].as_str().unwrap(),
        compared["query"]["date_range"][1].as_str().unwrap(),
    );
    let from = chrono::DateTime::parse_from_rfc3339(from)
        .unwrap()
        .timestamp();
    let to = chrono::DateTime::parse_from_rfc3339(to)
        .unwrap()
        .timestamp()
        + 1;
    let funnel: Value = {
        let request = axum::http::Request::get(format!(
            "/api/funnel?from={from}&to={to}&window=86400&steps=page:/pricing,event:Signed%20Up"
        ))
        .header("authorization", "Bearer rk_shop")
        .body(axum::body::Body::empty())
        .unwrap();
        let response = tower::ServiceExt::oneshot(router(state.clone()), request)
            .await
            .unwrap();
        serde_json::from_slice(
            &axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap(),
        )
        .unwrap()
    };
    let funnel_shown = steps["funnel"].as_array().unwrap();
    assert_eq!(funnel_shown.len(), 2, "{funnel_shown:?}");
    for (row, step) in funnel_shown.iter().zip(funnel["steps"].as_array().unwrap()) {
        assert_eq!(
            row[1].as_str().unwrap(),
            step["persons"].to_string(),
            "{row}"
        );
    }
    // The Ask box answers with the model's number and refuses what it cannot know.
    assert_eq!(
        steps["answered"]["state"], "answered",
        "{}",
        steps["answered"]
    );
    let germans = total(
        &state,
        "visitors",
        "30d",
        json!([["is", "visit:country", ["DE"]]]),
    )
    .await;
    assert!(
        steps["answered"]["summary"]
            .as_str()
            .unwrap()
            .contains(&germans.parse::<u64>().unwrap().to_string()),
        "{}",
        steps["answered"]
    );
    assert_eq!(
        steps["refused"]["state"], "cannot_answer",
        "{}",
        steps["refused"]
    );

    // The share link, in a browser that never saw a read key: the same numbers, no Ask.
    let shared = result_of(&share_dom);
    println!("the share link showed: {shared}");
    assert!(
        shared["stored"].is_null(),
        "a read key was stored: {shared}"
    );
    assert!(shared["site"].as_str().unwrap().contains("read-only"));
    assert_eq!(shared["askHidden"], true);
    assert_eq!(
        shared["visitors"].as_str().unwrap(),
        total(&state, "visitors", "30d", json!([])).await
    );

    // Pictures: the view the clicks built (its URL holds it), and the shared dashboard.
    let view = steps["view"].as_str().unwrap().to_owned();
    let shots = [
        (
            output.join("dashboard-filtered.png"),
            format!("http://{address}/{view}&key=rk_shop"),
        ),
        (
            output.join("dashboard-shared.png"),
            format!("http://{address}/#share=sk_shop&live=0&range=30d"),
        ),
    ];
    {
        let (profile, shots) = (profile.clone(), shots.clone());
        tokio::task::spawn_blocking(move || {
            for (file, page) in shots {
                run_chromium(
                    &profile,
                    &[
                        "--window-size=1280,1500".into(),
                        format!("--screenshot={}", file.display()),
                        page,
                    ],
                );
            }
        })
        .await
        .unwrap();
    }
    for (file, _) in &shots {
        check_screenshot(file);
    }
    server.abort();
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_dir_all(&share_profile);
    common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
}
