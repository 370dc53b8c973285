//! Exactly-once with ClickHouse stopped and started under the running engine (a private
//! server, so no other test sees it go), with a few SIGKILLs as well: the sinks retry with
//! backoff and hold the checkpoint, and every table ends equal to the reference.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use common::crash::{CrashOptions, crash_run, env_or};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_exact_after_clickhouse_outages() {
    crash_run(CrashOptions {
        name: "outage",
        events: env_or("CLICKSTREAM_OUTAGE_EVENTS", 20_000),
        min_kills: 2,
        min_outages: 3,
        seed: env_or("CLICKSTREAM_CRASH_SEED", u64::from(rand::random::<u32>())),
    })
    .await;
}
