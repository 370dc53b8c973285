//! The real client libraries, used as an application uses them, against the gateway over a
//! socket, through the broker and a two-process engine cluster into ClickHouse: Segment's and
//! RudderStack's Node SDKs (from npm) and Python SDKs (from PyPI), installed by
//! `deploy/lib.sh` (`ensure_sdks`) at pinned versions. RudderStack's SDKs gzip every batch and
//! its Python SDK sends times without an offset; Segment's send numbers and nested objects as
//! they are. Each SDK sends its events with its own defaults; every event must arrive exactly
//! once with the right id, name, property, time and user, and the SDK must report no error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::path::PathBuf;

use common::{GatewayPipeline, required_env, wait_until_checkpointed};

/// Events each SDK sends.
const COUNT: usize = 40;
/// 2023-11-14T22:13:20Z, the first event's time (event i is i seconds later).
const BASE_MS: i64 = 1_700_000_000_000;

/// (runtime, SDK, driver script in `deploy/sdks/`).
const SDKS: [(&str, &str, &str); 4] = [
    ("node", "segment", "send.js"),
    ("node", "rudder", "send.js"),
    ("python3", "segment", "send.py"),
    ("python3", "rudder", "send.py"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_and_rudderstack_sdks_deliver_every_event_exactly_once() {
    let sdk_dir = PathBuf::from(required_env("CLICKSTREAM_SDK_DIR"));
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/sdks");
    let mut pipeline = GatewayPipeline::start("sdks", "sdk").await;
    let address = pipeline.gateway;

    for (runtime, sdk, script) in SDKS {
        let prefix = format!("{runtime}-{sdk}");
        let output = tokio::process::Command::new(runtime)
            .arg(scripts.join(script))
            .args([sdk, &format!("http://{address}"), "wk_sdk"])
            .arg(COUNT.to_string())
            .arg(&prefix)
            .env("NODE_PATH", sdk_dir.join("node/node_modules"))
            .env("PYTHONPATH", sdk_dir.join("python"))
            .output()
            .await
            .unwrap_or_else(|error| panic!("cannot run {runtime}: {error}"));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{prefix} failed: {said}");
        println!("{}", said.trim());
    }
    let (clickhouse, database) = (&pipeline.clickhouse, &pipeline.database);
    wait_until_checkpointed(
        clickhouse,
        database,
        SDKS.len() * COUNT,
        &mut pipeline.cluster,
    )
    .await;

    for (runtime, sdk, _) in SDKS {
        let prefix = format!("{runtime}-{sdk}");
        // Per event: its index from the message id, and what arrived.
        let sql = format!(
            "SELECT count(), uniqExact(message_id), \
                    countIf(name = 'SDK Event' AND type = 'track'), \
                    countIf(anonymous_id = '{prefix}-anon'), \
                    countIf(user_id = if(index % 2 = 1, '{prefix}-user', '')), \
                    countIf(properties.value[indexOf(properties.key, 'index')] = toString(index)), \
                    countIf(abs(event_time_ms - ({BASE_MS} + index * 1000)) < 10000) \
             FROM (SELECT *, toInt64(replaceRegexpOne(message_id, '^.*-', '')) AS index \
                   FROM {database}.events FINAL \
                   WHERE tenant = 'sdk' AND startsWith(message_id, '{prefix}-')) \
             FORMAT TabSeparated"
        );
        let row = clickhouse.query(&sql).await;
        let expected = [COUNT, COUNT, COUNT, COUNT, COUNT, COUNT, COUNT]
            .map(|n| n.to_string())
            .join("\t");
        assert_eq!(
            row.trim(),
            expected,
            "{prefix}: events, distinct ids, names, anonymous ids, user ids, properties, times"
        );
    }

    pipeline.finish().await;
}
