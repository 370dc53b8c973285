//! Exactly-once under crashes: at least ten SIGKILLs of random engine processes while 50,000
//! events flow through the gateway, restarts with other `-w`/`-n`, then every table compared
//! with the reference (see `common/crash.rs`).
//!
//! The longer version (`deploy/crash-test.sh`) sets `CLICKSTREAM_CRASH_EVENTS`,
//! `CLICKSTREAM_CRASH_KILLS` and `CLICKSTREAM_CRASH_SEED`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use common::crash::{CrashOptions, crash_run, env_or};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_exact_after_repeated_sigkills() {
    crash_run(CrashOptions {
        name: "crash",
        events: env_or("CLICKSTREAM_CRASH_EVENTS", 50_000),
        min_kills: env_or("CLICKSTREAM_CRASH_KILLS", 10),
        min_outages: 0,
        seed: env_or("CLICKSTREAM_CRASH_SEED", u64::from(rand::random::<u32>())),
    })
    .await;
}
