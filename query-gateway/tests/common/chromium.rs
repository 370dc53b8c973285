//! Headless Chromium for the page tests (Debian's package, installed by `deploy/test.sh`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
pub fn run_chromium(profile: &Path, extra: &[String]) -> String {
    std::fs::create_dir_all(profile).expect("profile dir");
    let (stdout_file, stderr_file) = (profile.join("stdout.txt"), profile.join("stderr.txt"));
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
            // Virtual time stands still while a request is open; the fixture's live streams end
            // after 2 s and the page reconnects (2 s retry), so the budget passes in about as
            // much real time, with live counters flowing meanwhile.
            "--virtual-time-budget=12000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .stdout(std::fs::File::create(&stdout_file).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_file).expect("stderr file"))
        .spawn()
        .expect("chromium runs");
    // Never hang the suite on a browser that does not finish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while browser.try_wait().expect("wait for chromium").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = browser.kill();
            panic!("chromium did not finish within 120 s: {extra:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = browser.wait().expect("chromium status");
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    assert!(status.success(), "chromium failed: {stderr}");
    std::fs::read_to_string(&stdout_file).expect("utf-8 DOM")
}

/// A screenshot was written and is a picture, not an empty page.
pub fn check_screenshot(screenshot: &Path) {
    let size = std::fs::metadata(screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} has {size} bytes",
        screenshot.display()
    );
    println!("screenshot: {}", screenshot.display());
}
