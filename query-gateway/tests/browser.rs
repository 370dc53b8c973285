//! The dashboard in a real browser: headless Chromium (Debian's package, installed by
//! `deploy/test.sh`) loads the page from a real socket, logs in with a read key, and the
//! rendered DOM shows the numbers of the fixture; a screenshot is kept for people to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::path::Path;

use clickstream_query_gateway::router;
use common::chromium::{check_screenshot, run_chromium};
use common::fixture;
use schemas::live::{LiveUpdate, channel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_the_tenants_numbers_in_chromium() {
    // Data a few hours old, so that the dashboard's "last 24 hours" holds all of it.
    let now = chrono::Utc::now().timestamp();
    let base = now - now % 3600 - 3 * 3600;
    let f = fixture(base).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(axum::serve(listener, router(f.state.clone())).into_future());
    // Live counters arrive as the engine sends them: through Redis. Publish a moving count for
    // acme (and a number for globex that must never show) while the browser is open.
    let redis_url = std::env::var("CLICKSTREAM_REDIS_URL").unwrap_or_else(|_| {
        panic!("CLICKSTREAM_REDIS_URL is not set: run the tests with deploy/test.sh, which starts Redis")
    });
    f.state.live.follow_redis(redis_url.clone());
    let mut redis = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {redis_url}: {e}"));
    // A task, not a thread: it must die with the test if an assertion fails.
    let publisher = tokio::spawn(async move {
        for i in 0.. {
            for (tenant, active) in [("acme", 10 + i), ("globex", 999)] {
                let update = LiveUpdate {
                    epoch: 1_000 + i as u64,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    active_visitors: Some(active),
                    events: Some(5),
                };
                let _: i64 = redis::cmd("PUBLISH")
                    .arg(channel(tenant))
                    .arg(serde_json::to_string(&update).expect("json"))
                    .query_async(&mut redis)
                    .await
                    .expect("publish");
            }
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    });
    let output_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&output_dir).expect("output dir");
    let profile = std::env::temp_dir().join(format!("clickstream-chromium-{}", std::process::id()));
    let url = format!("http://{address}/#key=rk_acme&range=24h");
    let (dom, screenshot) = {
        let (profile, url, output_dir) = (profile.clone(), url.clone(), output_dir.clone());
        tokio::task::spawn_blocking(move || {
            let dom = run_chromium(&profile, &["--dump-dom".into(), url.clone()]);
            let screenshot = output_dir.join("dashboard.png");
            run_chromium(
                &profile,
                &[
                    "--window-size=1280,1100".into(),
                    format!("--screenshot={}", screenshot.display()),
                    // The live counter is checked in the DOM run; the picture needs no stream.
                    format!("{url}&live=0"),
                ],
            );
            (dom, screenshot)
        })
        .await
        .expect("chromium task")
    };

    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page did not finish loading:\n{dom}"
    );
    // acme in the last 24 hours: visitors v1, v2, v3, v9; sessions s1, s2, s4, s9; pages
    // e1, e2, e7 on /a and e3 on /b (the alias, the late event and the tombstone never count).
    for (metric, value) in [("visitors", "4"), ("visits", "4"), ("pageviews", "4")] {
        let card = format!(r#"data-metric="{metric}" data-value="{value}""#);
        assert!(dom.contains(&card), "{metric} is not {value}:\n{dom}");
    }
    assert!(dom.contains(r#"data-value="/a""#), "top pages:\n{dom}");
    assert!(dom.contains("<polyline"), "the chart has a line");
    // The live counter moved while the page was open, and only with acme's numbers.
    let live = dom
        .find(r#"id="live""#)
        .map(|at| &dom[at..(at + 400).min(dom.len())])
        .unwrap_or_else(|| panic!("no live counter:\n{dom}"));
    let history = live
        .split(r#"data-history=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no live history: {live}"));
    let shown: std::collections::BTreeSet<&str> =
        history.split(',').filter(|v| !v.is_empty()).collect();
    assert!(shown.len() >= 2, "the live counter did not change: {live}");
    assert!(
        !shown.contains("999"),
        "globex's live counter reached acme: {live}"
    );
    println!("live counter showed {history}");
    assert!(dom.contains("complete up to"), "progress mark:\n{dom}");
    assert!(dom.contains("first week"), "retention table:\n{dom}");
    assert!(
        !dom.contains("/secret"),
        "another tenant's page leaked into the dashboard"
    );
    check_screenshot(&screenshot);

    server.abort();
    publisher.abort();
    let _ = std::fs::remove_dir_all(&profile);
    f.drop_database().await;
}

/// Drives the dashboard's Ask box from a page of the same origin (the dashboard in an
/// iframe): asks a question, waits for the answer, clicks a follow-up, waits again, and writes
/// what the dashboard showed into its own DOM for `--dump-dom`.
const ASK_HARNESS: &str = r##"<!doctype html><html><body style="margin:0">
<iframe id="f" src="/#key=rk_acme&live=0&range=24h" style="width:1280px;height:1000px;border:0"></iframe>
<pre id="result">pending</pre>
<script>
"use strict";
const frame = document.getElementById("f");
const doc = () => frame.contentDocument;
function done(text) { document.getElementById("result").textContent = text; }
function waitFor(check, then, tries = 0) {
  const value = check();
  if (value) { then(value); } else if (tries > 600) { done("timeout"); } else { setTimeout(() => waitFor(check, then, tries + 1), 50); }
}
function shown() {
  const a = doc().getElementById("answer");
  const chart = a.querySelector("#answer-chart");
  return {
    state: a.dataset.state,
    question: a.querySelector(".question")?.textContent,
    summary: a.querySelector(".summary")?.textContent,
    chart: chart ? chart.dataset.chart : null,
    lines: a.querySelectorAll("#answer-chart polyline").length,
    bars: a.querySelectorAll("#answer-chart rect").length,
    rows: [...a.querySelectorAll("table tr")].slice(1).map((tr) => [...tr.children].map((td) => td.textContent)),
    sql: a.querySelector("pre")?.textContent,
    followUps: [...a.querySelectorAll(".follow-ups button")].map((b) => b.textContent),
  };
}
const settled = () => { const s = doc().getElementById("answer").dataset.state; return !["empty", "asking", "clicked"].includes(s) && s; };
frame.addEventListener("load", () => {
  waitFor(() => doc().body.dataset.loaded === "true", () => {
    doc().getElementById("ask").value = "Page views per day in the last 24 hours";
    doc().getElementById("ask-form").requestSubmit();
    waitFor(settled, () => {
      const first = shown();
      const next = [...doc().querySelectorAll("#answer .follow-ups button")].find((b) => b.textContent.startsWith("Top pages"));
      doc().getElementById("answer").dataset.state = "clicked";
      if (next) { next.click(); }
      waitFor(settled, () => {
        const second = shown();
        frame.contentWindow.scrollTo(0, doc().getElementById("answer").getBoundingClientRect().top - 120);
        done(JSON.stringify({ first, second }));
      });
    });
  });
});
</script></body></html>"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ask_box_answers_charts_and_follows_up_in_chromium() {
    let now = chrono::Utc::now().timestamp();
    let base = now - now % 3600 - 3 * 3600;
    let f = fixture(base).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = router(f.state.clone()).route(
        "/ask-harness",
        axum::routing::get(|| async { axum::response::Html(ASK_HARNESS) }),
    );
    let server = tokio::spawn(axum::serve(listener, app).into_future());
    let output_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&output_dir).expect("output dir");
    let profile =
        std::env::temp_dir().join(format!("clickstream-chromium-ask-{}", std::process::id()));
    let url = format!("http://{address}/ask-harness");
    let screenshot = output_dir.join("ask.png");
    let dom = {
        let (profile, url, screenshot) = (profile.clone(), url.clone(), screenshot.clone());
        tokio::task::spawn_blocking(move || {
            let dom = run_chromium(&profile, &["--dump-dom".into(), url.clone()]);
            run_chromium(
                &profile,
                &[
                    "--window-size=1280,1000".into(),
                    format!("--screenshot={}", screenshot.display()),
                    url,
                ],
            );
            dom
        })
        .await
        .expect("chromium task")
    };
    let result = dom
        .split(r#"<pre id="result">"#)
        .nth(1)
        .and_then(|rest| rest.split("</pre>").next())
        .unwrap_or_else(|| panic!("no result:\n{dom}"))
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    let shown: serde_json::Value = serde_json::from_str(&result)
        .unwrap_or_else(|_| panic!("the harness did not finish: {result}"));
    println!("the Ask box showed: {shown:#}");
    let (first, second) = (&shown["first"], &shown["second"]);
    // acme's page views: e1, e2 (its newest version) and e7 on /a, e3 on /b, all within the
    // last hours (one day, or two around midnight UTC).
    assert_eq!(first["state"], "answered", "{first}");
    assert_eq!(first["chart"], "line");
    assert_eq!(first["lines"], 1);
    let per_day: Vec<u64> = first["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("rows: {first}"))
        .iter()
        .map(|row| {
            row[1]
                .as_str()
                .unwrap_or("x")
                .replace(',', "")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(per_day.iter().sum::<u64>(), 4, "{first}");
    assert!(
        first["summary"]
            .as_str()
            .unwrap()
            .contains("complete up to"),
        "{first}"
    );
    // The offline translator writes no SQL: the typed query that ran is shown.
    assert!(
        first["sql"].as_str().unwrap().contains("\"pageviews\""),
        "{first}"
    );
    assert_eq!(
        first["followUps"].as_array().map(Vec::len),
        Some(3),
        "{first}"
    );
    // The clicked follow-up: top pages, a bar per page, /a first with 3 views.
    assert_eq!(second["state"], "answered", "{second}");
    assert!(
        second["question"]
            .as_str()
            .unwrap()
            .starts_with("Top pages"),
        "{second}"
    );
    assert_eq!(second["chart"], "bar");
    assert_eq!(second["bars"], 2, "{second}");
    assert_eq!(
        second["rows"],
        serde_json::json!([["/a", "3"], ["/b", "1"]])
    );
    assert!(
        !result.contains("/secret"),
        "another tenant's page leaked into the answer"
    );
    check_screenshot(&screenshot);
    server.abort();
    let _ = std::fs::remove_dir_all(&profile);
    f.drop_database().await;
}
