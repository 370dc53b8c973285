//! Applies [`schemas::retention::Plan`]: each tenant's retention (from the tenants file) and
//! the storage tiers. Process 0 runs a pass at start and then every `retention.interval_secs`,
//! reading the tenants file again each time, so a changed retention needs no restart.
//!
//! - Servers with TTL: each table gets the plan's `TTL` with `ALTER TABLE … MODIFY TTL`, only
//!   when it differs from the last one applied (recorded in `_retention`): ClickHouse rewrites
//!   the table's parts to apply a new TTL (`materialize_ttl_after_modify`), which a restart
//!   must not repeat.
//! - Servers without TTL (18.16): each tenant's expired rows of each per-person table go with
//!   one `ALTER TABLE … DELETE` mutation, awaited, when a count on the sort key's prefix finds
//!   any; each is recorded in `_retention` with its rows and duration. The horizon moves by
//!   whole days, so a tenant's rows are deleted once a day however often passes run.
//! - Both: each tenant's horizon, when it moved, as a mark ([`schemas::retention::MARK`]) that
//!   the query gateway reads.

use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use schemas::retention::{MARK, Plan, TIERED, horizon_secs};
use schemas::tenants::{Tenants, TenantsError};
use serde::{Deserialize, Serialize};

use crate::clickhouse::{CountRow, SinkError, await_mutations, client, server_version};
use crate::config::{ClickHouseConfig, RetentionConfig};
use crate::metrics::Metrics;

/// Why a retention pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The tenants file could not be read.
    #[error("reading the tenants file")]
    Tenants(#[from] TenantsError),
    /// ClickHouse refused or was unreachable.
    #[error("applying retention in ClickHouse")]
    ClickHouse(#[from] SinkError),
    /// A mutation was not done within [`MUTATION_DEADLINE`] (see `system.mutations`'
    /// `latest_fail_reason`); the next pass counts again and retries what is left.
    #[error("the mutation on {table} was not done after {MUTATION_DEADLINE:?}")]
    MutationTimeout {
        /// The table.
        table: &'static str,
    },
}

/// How long a pass waits for one mutation.
pub const MUTATION_DEADLINE: Duration = Duration::from_secs(3_600);

impl From<clickhouse::error::Error> for RetentionError {
    fn from(error: clickhouse::error::Error) -> Self {
        RetentionError::ClickHouse(SinkError::ClickHouse(error))
    }
}

/// One row of `_retention`: what one pass did to one table (and tenant).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct RetentionRow {
    /// Table.
    pub table_name: String,
    /// Tenant; empty for a TTL, which covers every tenant.
    pub tenant: String,
    /// The TTL applied, or the mutation's condition.
    pub rule: String,
    /// Rows before this (Unix seconds) were deleted; 0 for a TTL.
    pub cutoff_secs: i64,
    /// Rows deleted (mutations only).
    pub rows: u64,
    /// How long the statement took, until its mutation was done, ms.
    pub duration_ms: u64,
    /// When, Unix ms.
    pub applied_at_ms: i64,
}

#[derive(Debug, Row, Deserialize)]
struct RuleRow {
    table_name: String,
    rule: String,
}

/// Runs passes forever (process 0 spawns it on the I/O runtime). A failed pass is logged with
/// its whole chain, counted, and retried at the next interval.
pub async fn run(
    clickhouse: ClickHouseConfig,
    retention: RetentionConfig,
    metrics: std::sync::Arc<Metrics>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(retention.interval_secs));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let tenants = match &retention.tenants_file {
            Some(path) => Tenants::load(path),
            None => Ok(Tenants::default()),
        };
        let outcome = match tenants {
            Ok(tenants) => {
                pass(
                    &clickhouse,
                    &Plan::new(&tenants, &clickhouse.tiers),
                    crate::now_ms() as i64,
                )
                .await
            }
            Err(error) => Err(error.into()),
        };
        match outcome {
            Ok(rows) => {
                for row in &rows {
                    metrics.retention_deleted_rows.inc_by(row.rows);
                    tracing::info!(table = %row.table_name, tenant = %row.tenant, rule = %row.rule, rows = row.rows, duration_ms = row.duration_ms, "retention applied");
                }
            }
            Err(error) => {
                metrics.retention_failures.inc();
                tracing::warn!(error = %crate::retry::Chain(&error), "retention pass failed; retrying at the next interval");
            }
        }
    }
}

/// One pass of `plan` at `now_ms`; returns what it did (also recorded in `_retention`).
pub async fn pass(
    config: &ClickHouseConfig,
    plan: &Plan,
    now_ms: i64,
) -> Result<Vec<RetentionRow>, RetentionError> {
    let client = client(config).with_database(&config.database);
    let (_, version) = server_version(&client).await?;
    let mut done = if version.has_ttl() {
        apply_ttl(&client, &config.database, plan, now_ms).await?
    } else {
        delete_expired(&client, &config.database, plan, now_ms).await?
    };
    done.extend(mark_horizons(&client, plan, now_ms).await?);
    Ok(done)
}

/// Records what one statement did, at once: a later failure must not make the next pass
/// repeat it (a repeated `MODIFY TTL` rewrites the table's parts again).
async fn record(client: &Client, row: &RetentionRow) -> Result<(), RetentionError> {
    let mut insert = client.insert::<RetentionRow>("_retention").await?;
    insert.write(row).await?;
    insert.end().await?;
    Ok(())
}

#[derive(Debug, Row, Deserialize)]
struct MarkRow {
    tenant: String,
    cutoff_secs: i64,
}

/// Writes a [`schemas::retention::MARK`] for each tenant whose horizon moved since its last.
async fn mark_horizons(
    client: &Client,
    plan: &Plan,
    now_ms: i64,
) -> Result<Vec<RetentionRow>, RetentionError> {
    let marks: Vec<MarkRow> = client
        .query(
            "SELECT tenant, max(cutoff_secs) AS cutoff_secs FROM _retention \
             WHERE table_name = ? GROUP BY tenant",
        )
        .bind(MARK)
        .fetch_all()
        .await?;
    let mut done = Vec::new();
    for (tenant, days) in &plan.retention {
        let cutoff_secs = horizon_secs(*days, now_ms.div_euclid(1000));
        let last = marks.iter().find(|mark| &mark.tenant == tenant);
        if last.is_some_and(|mark| mark.cutoff_secs >= cutoff_secs) {
            continue;
        }
        let row = RetentionRow {
            table_name: MARK.to_owned(),
            tenant: tenant.clone(),
            rule: format!("retention_days = {days}"),
            cutoff_secs,
            rows: 0,
            duration_ms: 0,
            applied_at_ms: now_ms,
        };
        record(client, &row).await?;
        done.push(row);
    }
    Ok(done)
}

async fn apply_ttl(
    client: &Client,
    database: &str,
    plan: &Plan,
    now_ms: i64,
) -> Result<Vec<RetentionRow>, RetentionError> {
    let applied: Vec<RuleRow> = client
        .query(
            "SELECT table_name, argMax(rule, applied_at_ms) AS rule FROM _retention \
             WHERE tenant = '' GROUP BY table_name",
        )
        .fetch_all()
        .await?;
    let mut done = Vec::new();
    for (table, _) in TIERED {
        let wanted = plan.ttl(table).unwrap_or_default();
        let last = applied
            .iter()
            .find(|row| row.table_name == table)
            .map_or("", |row| row.rule.as_str());
        if wanted == last {
            continue;
        }
        let started = Instant::now();
        client
            .query(&plan.modify_ttl_sql(database, table))
            .execute()
            .await?;
        let row = RetentionRow {
            table_name: table.to_owned(),
            tenant: String::new(),
            rule: wanted,
            cutoff_secs: 0,
            rows: 0,
            duration_ms: started.elapsed().as_millis() as u64,
            applied_at_ms: now_ms,
        };
        record(client, &row).await?;
        done.push(row);
    }
    Ok(done)
}

async fn delete_expired(
    client: &Client,
    database: &str,
    plan: &Plan,
    now_ms: i64,
) -> Result<Vec<RetentionRow>, RetentionError> {
    let mut done = Vec::new();
    for deletion in plan.deletions(now_ms.div_euclid(1000)) {
        let CountRow { count } = client
            .query(&deletion.count_sql(database))
            .fetch_one()
            .await?;
        if count == 0 {
            continue;
        }
        let started = Instant::now();
        let statement = deletion.delete_sql(database);
        client.query(&statement).execute().await?;
        tokio::time::timeout(MUTATION_DEADLINE, await_mutations(client, deletion.table))
            .await
            .map_err(|_| RetentionError::MutationTimeout {
                table: deletion.table,
            })??;
        let row = RetentionRow {
            table_name: deletion.table.to_owned(),
            tenant: deletion.tenant.clone(),
            rule: statement,
            cutoff_secs: deletion.cutoff_secs,
            rows: count,
            duration_ms: started.elapsed().as_millis() as u64,
            applied_at_ms: now_ms,
        };
        record(client, &row).await?;
        done.push(row);
    }
    Ok(done)
}
