//! The real client libraries, used as an application uses them, against the gateway over a
//! socket, through the broker and a two-process engine cluster into ClickHouse: Segment's and
//! RudderStack's Node SDKs (from npm) and Python SDKs (from PyPI), installed by
//! `deploy/lib.sh` (`ensure_sdks`) at pinned versions. RudderStack's SDKs gzip every batch and
//! its Python SDK sends times without an offset; Segment's send numbers and nested objects as
//! they are. Each SDK sends its events with its own defaults; every event must arrive exactly
//! once with the right id, name, property, time and user, and the SDK must report no error.
//! Beside them, a raw batch with a bad event and an unreadable address: the good events are
//! stored and the gateway's refusal and warning reach `ingestion_warnings` through Kafka.

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
    let records_of_the_raw_batch = send_a_batch_with_a_bad_event(address).await;
    let (clickhouse, database) = (&pipeline.clickhouse, &pipeline.database);
    wait_until_checkpointed(
        clickhouse,
        database,
        SDKS.len() * COUNT + records_of_the_raw_batch,
        &mut pipeline.cluster,
    )
    .await;
    check_the_raw_batch(clickhouse, database).await;

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

/// Posts a batch of a good page view (its address with a port), a track call without a name,
/// and a track call with a basic-format offset and an address that is none; returns the Kafka
/// records it makes (two events, a refusal, a warning).
async fn send_a_batch_with_a_bad_event(address: std::net::SocketAddr) -> usize {
    let batch = serde_json::json!({"batch": [
        {"type": "page", "anonymousId": "w", "messageId": "w-good",
         "properties": {"path": "/pricing?ref=nav"}, "context": {"ip": "203.0.113.7:51234"}},
        {"type": "track", "anonymousId": "w", "messageId": "w-bad"},
        {"type": "track", "anonymousId": "w", "messageId": "w-time", "event": "Late",
         "timestamp": "2023-11-15T03:43:20+0530", "context": {"ip": "not an address"}}
    ]});
    let response = reqwest::Client::new()
        .post(format!("http://{address}/v1/batch"))
        .basic_auth("wk_sdk", Some(""))
        .json(&batch)
        .send()
        .await
        .expect("gateway answers");
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["refused"][0]["messageId"], "w-bad", "{answer}");
    4
}

async fn check_the_raw_batch(clickhouse: &common::ClickHouse, database: &str) {
    let events = clickhouse
        .query(&format!(
            "SELECT message_id, path, ip, if(message_id = 'w-time', event_time_ms, 0) \
             FROM {database}.events FINAL \
             WHERE startsWith(message_id, 'w-') ORDER BY message_id FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(
        events.trim(),
        format!("w-good\t/pricing\t203.0.113.0\t0\nw-time\t\t127.0.0.0\t{BASE_MS}"),
        "the good events, a pathname, the address from its proxy form (the other: the \
         request's), the +0530 time"
    );
    let warnings = clickhouse
        .query(&format!(
            "SELECT type, message_id, field, value, detail != '' \
             FROM {database}.ingestion_warnings FINAL \
             WHERE tenant = 'sdk' ORDER BY type, message_id FORMAT TabSeparated"
        ))
        .await;
    assert_eq!(
        warnings.trim(),
        "invalid_ip_ignored\tw-time\tcontext.ip\tnot an address\t1\n\
         refused_event\tw-bad\tevent\t\t1"
    );
}
