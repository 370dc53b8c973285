//! `engine --remove-tenant`: the operator command that removes a whole tenant.

use std::time::{Duration, Instant};

use schemas::ControlMessage;

use super::{DeletionRow, RemovalError};
use crate::clickhouse::client;

/// `engine --remove-tenant`: records the request, writes the control record (the running
/// engine drops the tenant's events from then on and in every replay, then deletes its rows),
/// and waits for the completion row.
pub async fn remove_tenant(
    config: &crate::config::EngineConfig,
    tenant: &str,
) -> Result<DeletionRow, RemovalError> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    if !schemas::ddl::is_valid_identifier(tenant) {
        return Err(RemovalError::BadTenant(tenant.to_owned()));
    }
    let client = client(&config.clickhouse).with_database(&config.clickhouse.database);
    let now = crate::now_ms() as i64;
    let row = DeletionRow {
        request_id: format!("tenant-{tenant}-{now}"),
        tenant: tenant.to_owned(),
        kind: "tenant".into(),
        id_hashes: Vec::new(),
        requester_key_id: "command".into(),
        requested_at_ms: now,
        status: "pending".into(),
        completed_at_ms: 0,
        removed_tables: Vec::new(),
        removed_rows: Vec::new(),
        version: 1,
    };
    let mut insert = client.insert::<DeletionRow>("_deletions").await?;
    insert.write(&row).await?;
    insert.end().await?;
    let message = ControlMessage::RemoveTenant {
        request_id: row.request_id.clone(),
        tenant: tenant.to_owned(),
        requested_at_ms: now,
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("acks", "all")
        .create()?;
    let payload = serde_json::to_vec(&message)?;
    producer
        .send(
            FutureRecord::to(&config.kafka.control_topic)
                .key(tenant)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(error, _)| error)?;
    let timeout = Duration::from_secs(config.erasure.mutation_timeout_secs);
    let deadline = Instant::now() + timeout;
    // The removal goes ahead whatever Redis says: its keys expire or are rebuilt.
    let redis_keys = match forget_in_redis(&config.live.redis_url, tenant).await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(error = %crate::retry::Chain(&error), tenant, "cannot delete the tenant's Redis keys; delete clickstream:*:{tenant}* by hand");
            0
        }
    };
    while Instant::now() < deadline {
        let latest: Option<DeletionRow> = client
            .query(
                "SELECT ?fields FROM _deletions WHERE request_id = ? ORDER BY version DESC LIMIT 1",
            )
            .bind(&row.request_id)
            .fetch_optional()
            .await?;
        if let Some(mut done) = latest.filter(|latest| latest.status == "completed") {
            done.removed_tables.push("redis".into());
            done.removed_rows.push(redis_keys);
            return Ok(done);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(RemovalError::NotCompleted {
        request_id: row.request_id,
        timeout,
    })
}

/// The Redis key prefixes of a tenant's data: the ingest gateway's rate-limit bucket and the
/// query gateway's Ask translations (the gateways' default prefixes).
pub const TENANT_REDIS_PATTERNS: &[&str] = &[
    "clickstream:ratelimit:{tenant}",
    "clickstream:ask:translation:v1:{tenant}:*",
];

/// Deletes the tenant's keys from the Redis at `url` (none configured: nothing); returns how
/// many.
async fn forget_in_redis(url: &str, tenant: &str) -> Result<u64, redis::RedisError> {
    if url.is_empty() {
        return Ok(0);
    }
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut deleted = 0;
    for pattern in TENANT_REDIS_PATTERNS {
        let pattern = pattern.replace("{tenant}", tenant);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("DEL")
                .arg(&keys)
                .query_async::<u64>(&mut connection)
                .await?;
        }
    }
    Ok(deleted)
}
