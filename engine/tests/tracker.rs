//! The browser tracker in headless Chromium (Debian's package): pages served by the test from
//! another origin load `/tracker.js` from the gateway with the README's two-line snippet,
//! navigate inside a single-page app, click, identify, leave the page (the queue goes out by
//! `sendBeacon` when the page is hidden or left: without it these events are lost), and come
//! back in a new browser session (sent by `fetch` after the flush interval); the events go through the broker and
//! a two-process engine cluster into ClickHouse, where they must all be, once, under one
//! anonymous id. A page that asks not to be tracked (Do-Not-Track, `data-respect-dnt`) sends
//! nothing. And Segment's own browser SDK, analytics-next, delivers through the same gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use common::{GatewayPipeline, checkpointed_records, wait_until_checkpointed};

/// The README's snippet, for a gateway at `gateway` (plus attributes).
fn snippet(gateway: &str, attributes: &str) -> String {
    format!(
        r#"<script>window.clickstream=window.clickstream||[];["page","track","identify","reset","flush"].forEach(function(m){{clickstream[m]=clickstream[m]||function(){{clickstream.push([m].concat([].slice.call(arguments)))}}}})</script>
<script async src="http://{gateway}/tracker.js" data-write-key="wk_web" {attributes}></script>"#
    )
}

/// The shop: a single-page navigation, a click, a login, then the page is left. Nothing is
/// sent before (a long flush interval), so everything must go out on `pagehide`. (Headless
/// Chromium's `--dump-dom` never finishes after a real navigation, so leaving is the event a
/// navigation fires.)
fn shop(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Shop</title>{}</head><body>
<button id="buy" onclick="clickstream.track('Added to Cart', {{sku: 'sku-1'}})">Buy</button>
<script>
setTimeout(function () {{ history.pushState({{}}, '', '/shop/cart'); }}, 300);
setTimeout(function () {{ document.getElementById('buy').click(); }}, 600);
setTimeout(function () {{ clickstream.identify('user-1', {{plan: 'pro'}}); }}, 900);
setTimeout(function () {{ window.dispatchEvent(new PageTransitionEvent('pagehide')); }}, 1200);
</script></body></html>"#,
        snippet(gateway, r#"data-flush-ms="60000""#)
    )
}

fn thanks(gateway: &str) -> String {
    format!(
        "<!doctype html><html><head><title>Thanks</title>{}</head><body>Thank you</body></html>",
        snippet(gateway, "")
    )
}

/// A visitor whose browser says Do-Not-Track, on a site that honours it.
fn private(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Private</title>
<script>Object.defineProperty(navigator, 'doNotTrack', {{value: '1'}});</script>{}</head>
<body><script>setTimeout(function () {{ clickstream.track('Secret'); }}, 300);</script></body></html>"#,
        snippet(gateway, r#"data-respect-dnt="true""#)
    )
}

fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("CLICKSTREAM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "{} is missing: run the tests with deploy/test.sh, which installs Chromium",
        path.display()
    );
    path
}

/// Opens `url` in headless Chromium with the profile `profile` (cookies and localStorage
/// persist between runs, as between visits) and lets it run 5 s of page time.
fn visit(profile: &Path, url: &str) {
    let log = profile.with_extension("log");
    let mut browser = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
            // Headless Chromium says `HeadlessChrome`, which is on the crawler list: its
            // events would be stored as a bot's and make no visit. Say what a desktop says.
            "--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            // Sites on `.example` names resolve to the test's servers (Plausible's tracker
            // sends nothing from `localhost` or an address).
            "--host-resolver-rules=MAP *.example 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("chromium runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    while browser.try_wait().expect("wait for chromium").is_none() {
        if Instant::now() > deadline {
            let _ = browser.kill();
            panic!("chromium did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = browser.wait().expect("chromium status");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "chromium failed on {url}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracker_records_a_visit_in_chromium() {
    let mut pipeline = GatewayPipeline::start("tracker", "web").await;

    let gateway = pipeline.gateway.to_string();
    let pages = Router::new()
        .route("/shop", get(Html(shop(&gateway))))
        .route("/thanks", get(Html(thanks(&gateway))))
        .route("/private", get(Html(private(&gateway))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}", listener.local_addr().unwrap());
    let pages_server = tokio::spawn(async move { axum::serve(listener, pages).await });

    let profile = pipeline.dir.join("browser-profile");
    let runs = [
        format!("{site}/shop?utm_source=mail"),
        // A new browser session with the same profile: the visitor comes back.
        format!("{site}/thanks?utm_source=news"),
    ];
    for url in runs {
        let profile = profile.clone();
        tokio::task::spawn_blocking(move || visit(&profile, &url))
            .await
            .unwrap();
    }
    let private_profile = pipeline.dir.join("private-profile");
    let url = format!("{site}/private");
    tokio::task::spawn_blocking(move || visit(&private_profile, &url))
        .await
        .unwrap();

    let (clickhouse, database) = (&pipeline.clickhouse, &pipeline.database);
    wait_until_checkpointed(clickhouse, database, 5, &mut pipeline.cluster).await;
    let rows: Vec<String> = clickhouse
        .query(&format!(
            "SELECT type, if(type = 'track', name, path), user_id, utm_source, person_id \
             FROM {database}.events FINAL WHERE tenant = 'web' ORDER BY event_time_ms, type \
             FORMAT TabSeparated"
        ))
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    let sorted = {
        let mut rows = rows.clone();
        rows.sort();
        rows
    };
    let mut expected = vec![
        "page\t/shop\t\tmail\tuser-1",
        "page\t/shop/cart\t\t\tuser-1",
        "track\tAdded to Cart\t\t\tuser-1",
        "identify\t/shop/cart\tuser-1\t\tuser-1",
        "page\t/thanks\tuser-1\tnews\tuser-1",
    ];
    expected.sort();
    assert_eq!(sorted, expected, "as stored, by time: {rows:#?}");
    let anonymous_ids = clickhouse
        .query(&format!(
            "SELECT uniqExact(anonymous_id), min(length(anonymous_id)), uniqExact(message_id), count() \
             FROM {database}.events FINAL WHERE tenant = 'web' FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(
        anonymous_ids.trim(),
        "1\t36\t5\t5",
        "one anonymous id (a UUID) across pages and sessions; each event once"
    );
    // Everything the browser sent has reached the engine by now (it ran before the wait);
    // give a straggler time to show, then the log must hold exactly the five.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        checkpointed_records(clickhouse, database).await,
        Some(5),
        "the Do-Not-Track page sent nothing"
    );

    pages_server.abort();
    pipeline.finish().await;
}

/// A page that loads Segment's own browser SDK, analytics-next (the npm package's UMD build,
/// served by the test, since the SDK would otherwise fetch itself and its settings from
/// Segment's CDN), pointed at the gateway, and makes a page, a track and an identify call.
fn analytics_next_page(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>AJS</title>
<script src="/analytics-next/bundles/index.js"></script>
<script>
AnalyticsNext.AnalyticsBrowser.load(
  {{ writeKey: 'wk_ajs', cdnURL: location.origin,
    cdnSettings: {{ integrations: {{ 'Segment.io': {{ apiKey: 'wk_ajs', apiHost: '{gateway}/v1', protocol: 'http' }} }} }} }},
  {{}}
).then(function (loaded) {{
  var analytics = loaded[0];
  analytics.page();
  analytics.track('Clicked', {{ n: 1 }});
  analytics.identify('user-9', {{ plan: 'pro' }});
}});
</script></head><body>analytics-next</body></html>"#
    )
}

/// One file of analytics-next's UMD build (its lazily loaded chunks too).
async fn analytics_next_file(
    axum::extract::Path(file): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let dir = PathBuf::from(common::required_env("CLICKSTREAM_SDK_DIR"))
        .join("node/node_modules/@segment/analytics-next/dist/umd");
    if file.contains('/') || file.contains("..") {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(dir.join(&file)) {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/javascript")],
            bytes,
        )
            .into_response(),
        Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Segment's browser SDK as a website runs it: every call reaches ClickHouse once, through
/// analytics.js's short routes (`/v1/p`, `/v1/t`, `/v1/i`) as `text/plain` with the write key
/// in the body, under one anonymous id, and the identify's user owns them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_analytics_next_delivers_in_chromium() {
    let mut pipeline = GatewayPipeline::start("ajs", "ajs").await;
    let gateway = pipeline.gateway.to_string();
    let pages = Router::new()
        .route("/page", get(Html(analytics_next_page(&gateway))))
        .route("/analytics-next/bundles/{file}", get(analytics_next_file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/page", listener.local_addr().unwrap());
    let pages_server = tokio::spawn(async move { axum::serve(listener, pages).await });
    let profile = pipeline.dir.join("ajs-profile");
    tokio::task::spawn_blocking(move || visit(&profile, &url))
        .await
        .unwrap();

    let (clickhouse, database) = (&pipeline.clickhouse, &pipeline.database);
    wait_until_checkpointed(clickhouse, database, 3, &mut pipeline.cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        checkpointed_records(clickhouse, database).await,
        Some(3),
        "each call sent once"
    );
    let rows: Vec<String> = clickhouse
        .query(&format!(
            "SELECT type, name, user_id, person_id, properties.value[indexOf(properties.key, 'n')] \
             FROM {database}.events FINAL WHERE tenant = 'ajs' ORDER BY type FORMAT TabSeparated"
        ))
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        rows,
        // analytics-next reads the user id when it sends, after the identify: all carry it.
        [
            "identify\t\tuser-9\tuser-9\t",
            "page\t\tuser-9\tuser-9\t",
            "track\tClicked\tuser-9\tuser-9\t1"
        ]
    );
    let ids = clickhouse
        .query(&format!(
            "SELECT uniqExact(anonymous_id), min(length(anonymous_id)) FROM {database}.events FINAL \
             WHERE tenant = 'ajs' FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(ids.trim(), "1\t36", "one anonymous id, a UUID");
    pages_server.abort();
    pipeline.finish().await;
}

/// A page of the site `plausible.example` with Plausible's own tracker (the npm package, an
/// ES module served by the test) sending to the gateway's `/api/event`: the page view, an
/// in-app navigation, a custom event with a property, an outbound link click; engagement
/// pings go out when the page is navigated away from and loses focus.
fn plausible_page(gateway: &str) -> String {
    format!(
        r#"<!doctype html><html><head><title>Plausible</title></head><body>
<a id="out" href="https://elsewhere.example/x" target="_blank">elsewhere</a>
<script type="module">
// The tracker stays silent in automated browsers unless a page says it knows.
window.__plausible = true;
import {{ init, track }} from '/plausible/plausible.js';
init({{ domain: 'plausible.example', endpoint: 'http://{gateway}/api/event', outboundLinks: true }});
setTimeout(function () {{ history.pushState({{}}, '', '/second'); }}, 300);
setTimeout(function () {{ track('Signup', {{ props: {{ plan: 'pro' }} }}); }}, 600);
setTimeout(function () {{ document.getElementById('out').click(); }}, 900);
setTimeout(function () {{ window.dispatchEvent(new Event('blur')); }}, 1200);
</script></body></html>"#
    )
}

/// The tracker's ES module, from the SDK directory.
async fn plausible_tracker_file() -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = PathBuf::from(common::required_env("CLICKSTREAM_SDK_DIR"))
        .join("node/node_modules/@plausible-analytics/tracker/plausible.js");
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (
        [(axum::http::header::CONTENT_TYPE, "application/javascript")],
        bytes,
    )
        .into_response()
}

/// Plausible's tracker delivers through the Events API: both page views, the custom event
/// with its property and the outbound-link click reach ClickHouse once each, under one
/// visitor id the gateway derived; the engagement pings are stored non-interactive, so the
/// visit is the two page views and the two custom events, and not a bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plausible_tracker_delivers_in_chromium() {
    let mut pipeline = GatewayPipeline::start("plausible", "plausible").await;
    let gateway = pipeline.gateway.to_string();
    let pages = Router::new()
        .route("/page", get(Html(plausible_page(&gateway))))
        .route("/plausible/plausible.js", get(plausible_tracker_file));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://plausible.example:{port}/page");
    let pages_server = tokio::spawn(async move { axum::serve(listener, pages).await });
    let profile = pipeline.dir.join("plausible-profile");
    tokio::task::spawn_blocking(move || visit(&profile, &url))
        .await
        .unwrap();

    let (clickhouse, database) = (&pipeline.clickhouse, &pipeline.database);
    wait_until_checkpointed(clickhouse, database, 5, &mut pipeline.cluster).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows: Vec<String> = clickhouse
        .query(&format!(
            "SELECT type, if(type = 'page', path, name), non_interactive, \
             if(type = 'track', arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), properties.key, properties.value), ','), '') \
             FROM {database}.events FINAL WHERE tenant = 'plausible' AND name != 'engagement' \
             ORDER BY event_time_ms FORMAT TabSeparated"
        ))
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        rows,
        [
            "page\t/page\t0\t",
            "page\t/second\t0\t",
            "track\tSignup\t0\tplan=pro",
            "track\tOutbound Link: Click\t0\turl=https://elsewhere.example/x",
        ],
        "each event once, in order"
    );
    let engagement = clickhouse
        .query(&format!(
            "SELECT count() > 0, min(non_interactive), uniqExact(message_id) = count() \
             FROM {database}.events FINAL WHERE tenant = 'plausible' AND name = 'engagement' \
             FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(
        engagement.trim(),
        "1\t1\t1",
        "engagement pings, stored non-interactive, once each"
    );
    let visitor = clickhouse
        .query(&format!(
            "SELECT uniqExact(anonymous_id), any(startsWith(anonymous_id, 'pl-')), any(library) \
             FROM {database}.events FINAL WHERE tenant = 'plausible' FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(
        visitor.trim(),
        "1\t1\tplausible-tracker/36",
        "one derived visitor id"
    );
    let visits = clickhouse
        .query(&format!(
            "SELECT count(), sum(page_views), sum(events), sum(is_bounce), any(device), any(browser) \
             FROM {database}.sessions FINAL WHERE tenant = 'plausible' AND deleted = 0 FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(
        visits.trim(),
        "1\t2\t4\t0\tDesktop\tChrome",
        "one visit, not a bounce"
    );
    pages_server.abort();
    pipeline.finish().await;
}
