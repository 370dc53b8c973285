//! The dashboard in a real browser: headless Chromium (Debian's package, installed by
//! `deploy/test.sh`) loads the page from a real socket, logs in with a read key, and the
//! rendered DOM shows the numbers of the fixture; a screenshot is kept for people to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use clickstream_query_gateway::router;
use common::fixture;

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

/// Runs headless Chromium with the flags this machine needs (no sandbox as root, no network
/// besides loopback) plus `extra`, and returns its stdout.
fn run_chromium(profile: &Path, extra: &[String]) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 DOM")
}

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

    let output_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-output");
    std::fs::create_dir_all(&output_dir).expect("output dir");
    let profile = std::env::temp_dir().join(format!("clickstream-chromium-{}", std::process::id()));
    let url = format!("http://{address}/#key=rk_acme");
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
                    url,
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
    for (metric, value) in [
        ("visitors", "4"),
        ("sessions", "4"),
        ("page_views", "4"),
        ("persons", "3"),
    ] {
        let card = format!(r#"data-metric="{metric}"><div class="label">"#);
        let at = dom
            .find(&card)
            .unwrap_or_else(|| panic!("no {metric} card:\n{dom}"));
        let value_html = format!(r#"<div class="value">{value}</div>"#);
        assert!(
            dom[at..].starts_with(&card) && dom[at..at + 200].contains(&value_html),
            "{metric} is not {value}: {}",
            &dom[at..at + 200]
        );
    }
    assert!(
        dom.contains("<li><span>/a</span><span>3</span></li>"),
        "top pages:\n{dom}"
    );
    assert!(
        dom.contains("<li><span>Signup</span><span>1</span></li>"),
        "top events:\n{dom}"
    );
    assert!(dom.contains("<rect"), "the chart has bars");
    assert!(
        !dom.contains("/secret"),
        "another tenant's page leaked into the dashboard"
    );
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} has {size} bytes",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());

    server.abort();
    let _ = std::fs::remove_dir_all(&profile);
    f.drop_database().await;
}
