//! Retention per tenant and storage tiers, on Debian's 18.16 (mutations) and on ClickHouse 26
//! (chdb with two local disks: TTL deletes and `TO VOLUME` moves): one tenant keeps 30 days,
//! another keeps everything; per-person rows past the retention go, everything else stays,
//! and a second pass changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use clickstream_engine::clickhouse::ensure_schema;
use clickstream_engine::config::ClickHouseConfig;
use clickstream_engine::sink::retention::pass;
use common::chdb::Chdb;
use common::{ClickHouse, required_env};
use schemas::retention::{Plan, Tier};
use schemas::tenants::Tenants;

const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_18_16_deletes_each_tenants_expired_rows_with_mutations() {
    let url = required_env("CLICKSTREAM_CLICKHOUSE_URL");
    check_retention(&url, "retention_old").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_26_deletes_with_ttl_and_moves_old_parts_to_the_warm_volume() {
    let dir = std::env::temp_dir().join(format!("clickstream-tiers-{}", std::process::id()));
    let warm = dir.join("warm");
    std::fs::create_dir_all(&warm).unwrap();
    // deploy/clickhouse/storage.xml's policy, its cold object-storage volume left out.
    let config = dir.join("storage.xml");
    std::fs::write(
        &config,
        format!(
            "<clickhouse><storage_configuration><disks><warm><path>{}/</path></warm></disks>\
             <policies><tiered><volumes><hot><disk>default</disk></hot><warm><disk>warm</disk></warm>\
             </volumes></tiered></policies></storage_configuration></clickhouse>",
            warm.display()
        ),
    )
    .unwrap();
    let chdb = Chdb::start("retention", None, Some(&config));
    let moved = check_retention(&chdb.url, "retention_new").await;
    assert!(
        moved,
        "old parts moved to the warm volume, new ones stayed on the hot one"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the scenario against the server at `url`; returns whether any part of `events` is on
/// the `warm` volume at the end.
async fn check_retention(url: &str, name: &str) -> bool {
    let clickhouse = ClickHouse {
        url: url.to_owned(),
        http: reqwest::Client::new(),
    };
    let database = format!("{name}_{}", std::process::id());
    let config = ClickHouseConfig {
        url: url.to_owned(),
        database: database.clone(),
        storage_policy: Some("tiered".into()),
        tiers: vec![Tier {
            volume: "warm".into(),
            after_days: 7,
        }],
        ..ClickHouseConfig::default()
    };
    let version = ensure_schema(&config).await.expect("schema");
    let now_ms = chrono::Utc::now().timestamp_millis();
    insert_rows(&clickhouse, &database, now_ms).await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid = \"acme\"\nwrite_keys = [\"w1\"]\nretention_days = 30\n\
         [[tenants]]\nid = \"globex\"\nwrite_keys = [\"w2\"]\n",
    )
    .unwrap();
    let plan = Plan::new(&tenants, &config.tiers);

    let done = pass(&config, &plan, now_ms).await.expect("first pass");
    for row in &done {
        println!(
            "{version}: {} {} rows={} {} ms: {}",
            row.table_name, row.tenant, row.rows, row.duration_ms, row.rule
        );
    }
    let (marks, applied): (Vec<_>, Vec<_>) = done.iter().partition(|row| row.table_name == "*");
    assert_eq!(
        marks
            .iter()
            .map(|row| row.tenant.as_str())
            .collect::<Vec<_>>(),
        ["acme"],
        "acme's horizon is marked for the query gateway"
    );
    if version.has_ttl() {
        assert_eq!(applied.len(), 5, "a TTL for each tiered table");
    } else {
        assert_eq!(
            applied.iter().map(|row| row.rows).collect::<Vec<_>>(),
            [1, 1, 1, 1],
            "one expired row of acme in each per-person table"
        );
    }
    // TTL deletes and moves are the server's background work: wait for them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = [
        ("events", "event_time", 2, 3),
        ("sessions", "start_time", 2, 3),
        ("agg_hour_visitors", "hour", 2, 3),
        ("ingestion_warnings", "received_at", 2, 3),
        ("agg_minute_metrics", "minute", 3, 3),
    ];
    loop {
        let mut counts = Vec::new();
        for (table, _, _, _) in expected {
            let count = |tenant: &str| {
                format!("SELECT count() FROM {database}.{table} WHERE tenant = '{tenant}'")
            };
            counts.push((
                clickhouse
                    .query(&count("acme"))
                    .await
                    .trim()
                    .parse::<u32>()
                    .unwrap(),
                clickhouse
                    .query(&count("globex"))
                    .await
                    .trim()
                    .parse::<u32>()
                    .unwrap(),
            ));
        }
        let wanted: Vec<(u32, u32)> = expected.iter().map(|e| (e.2, e.3)).collect();
        if counts == wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows per table (acme, globex): {counts:?}, expected {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let again = pass(&config, &plan, now_ms).await.expect("second pass");
    assert!(again.is_empty(), "a second pass changes nothing: {again:?}");

    let mut moved = false;
    if version.has_ttl() {
        let on = |disk: &str| {
            format!(
                "SELECT count() FROM system.parts WHERE database = '{database}' AND table = 'events' AND active AND disk_name = '{disk}'"
            )
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !moved && Instant::now() < deadline {
            moved = clickhouse.query(&on("warm")).await.trim() != "0";
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        moved &= clickhouse.query(&on("default")).await.trim() != "0";
    }
    clickhouse.query(&format!("DROP DATABASE {database}")).await;
    moved
}

/// Rows 40, 10 and 1 days old of both tenants in every tiered table.
async fn insert_rows(clickhouse: &ClickHouse, database: &str, now_ms: i64) {
    for tenant in ["acme", "globex"] {
        for age_days in [40, 10, 1] {
            let ms = now_ms - age_days * DAY_MS;
            let secs = ms / 1000;
            let id = format!("{tenant}-{age_days}");
            for statement in [
                format!(
                    "INSERT INTO {database}.events (tenant, message_id, type, event_time, event_time_ms, received_at, received_at_ms, anonymous_id, person_id, version) \
                     VALUES ('{tenant}', '{id}', 'page', {secs}, {ms}, {secs}, {ms}, 'v-{id}', 'p-{id}', 1)"
                ),
                format!(
                    "INSERT INTO {database}.sessions (tenant, session_id, person_id, visitor_id, start_time, start_ms, end_ms, events, page_views, version) \
                     VALUES ('{tenant}', 's-{id}', 'p-{id}', 'v-{id}', {secs}, {ms}, {ms}, 1, 1, 1)"
                ),
                format!(
                    "INSERT INTO {database}.agg_hour_visitors (tenant, hour, visitor_id, person_id, events, page_views, version) \
                     VALUES ('{tenant}', {secs}, 'v-{id}', 'p-{id}', 1, 1, 1)"
                ),
                format!(
                    "INSERT INTO {database}.agg_minute_metrics (tenant, minute, metric, dimension, value, version) \
                     VALUES ('{tenant}', {secs}, 'page_views', '/', 1, 1)"
                ),
                format!(
                    "INSERT INTO {database}.ingestion_warnings (tenant, type, message_id, field, value, event_time, event_time_ms, received_at) \
                     VALUES ('{tenant}', 'ignored_field', '{id}', 'context.x', 'v-{id}', {secs}, {ms}, {secs})"
                ),
            ] {
                clickhouse.query(&statement).await;
            }
        }
    }
}
