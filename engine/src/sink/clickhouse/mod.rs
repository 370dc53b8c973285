//! ClickHouse: schema, row types, and the reads and writes the engine makes.

pub mod rows;

use std::collections::{BTreeMap, HashMap};

use clickhouse::{Client, Row};
use operators::IdentityClaim;
use schemas::ddl::ServerVersion;
use serde::Deserialize;

use crate::config::ClickHouseConfig;
use rows::{CheckpointRow, ClaimRow};

/// Why ClickHouse could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The server refused or could not be reached.
    #[error("clickhouse")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// `SELECT version()` returned something unexpected.
    #[error("unrecognised ClickHouse version {0:?}")]
    Version(String),
}

/// A client for the configured server, without a default database (DDL names it explicitly).
pub fn client(config: &ClickHouseConfig) -> Client {
    Client::default()
        .with_url(&config.url)
        .with_user(&config.user)
        .with_password(&config.password)
        // Schema validation needs a server newer than Debian's 18.16; plain RowBinary is also
        // the faster path.
        .with_validation(false)
}

#[derive(Debug, Row, Deserialize)]
struct VersionRow {
    version: String,
}

/// Creates the database and tables (idempotent) for the server's version; returns it.
pub async fn ensure_schema(config: &ClickHouseConfig) -> Result<ServerVersion, SinkError> {
    let client = client(config);
    let VersionRow { version } = client
        .query("SELECT version() AS version")
        .fetch_one()
        .await?;
    let parsed =
        ServerVersion::parse(&version).ok_or_else(|| SinkError::Version(version.clone()))?;
    for statement in schemas::ddl::statements(&config.database, parsed) {
        client.query(&statement).execute().await?;
    }
    tracing::info!(%version, database = %config.database, "ClickHouse schema ready");
    Ok(parsed)
}

#[derive(Debug, Row, Deserialize)]
struct CountRow {
    count: u64,
}

/// Whether every table of the schema exists. Processes other than the first wait for this
/// instead of running DDL themselves: ClickHouse 18.16 can corrupt a database (registered,
/// but without its metadata directory) when two connections create it at the same time.
pub async fn schema_ready(config: &ClickHouseConfig) -> Result<bool, SinkError> {
    let names: Vec<&str> = schemas::ddl::TABLES.iter().map(|(name, _)| *name).collect();
    let CountRow { count } = client(config)
        .query("SELECT count() AS count FROM system.tables WHERE database = ? AND has(?, name)")
        .bind(&config.database)
        .bind(names.as_slice())
        .fetch_one()
        .await?;
    Ok(count as usize == names.len())
}

/// Reads and writes the engine's tables.
#[derive(Debug, Clone)]
pub struct ClickHouseWriter {
    client: Client,
    topic: String,
}

#[derive(Debug, Row, Deserialize)]
struct CheckpointPosition {
    partition: i32,
    next_offset: i64,
}

impl ClickHouseWriter {
    /// A writer for the configured database, recording checkpoints of `topic`.
    pub fn new(config: &ClickHouseConfig, topic: &str) -> Self {
        ClickHouseWriter {
            client: client(config).with_database(&config.database),
            topic: topic.to_owned(),
        }
    }

    /// The topic whose positions this writer checkpoints.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Inserts rows in one statement. Every table is a ReplacingMergeTree keyed so that a
    /// repeated insert of the same rows is harmless.
    pub async fn insert<R: clickhouse::RowOwned + clickhouse::RowWrite>(
        &self,
        table: &str,
        rows: &[R],
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<R>(table).await?;
        for row in rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Records that every record below `next_offsets` is reflected in every table.
    pub async fn checkpoint(
        &self,
        next_offsets: &BTreeMap<i32, i64>,
        epoch: u64,
    ) -> Result<(), SinkError> {
        let written_at = rows::datetime(crate::now_ms() as i64);
        let rows: Vec<CheckpointRow> = next_offsets
            .iter()
            .map(|(&partition, &next_offset)| CheckpointRow {
                topic: self.topic.clone(),
                partition,
                next_offset,
                epoch,
                written_at,
            })
            .collect();
        self.insert("_checkpoints", &rows).await
    }

    /// The next offset to read per partition, from the newest checkpoint of each.
    pub async fn load_checkpoints(&self) -> Result<HashMap<i32, i64>, SinkError> {
        let positions: Vec<CheckpointPosition> = self
            .client
            .query("SELECT partition, max(next_offset) AS next_offset FROM _checkpoints WHERE topic = ? GROUP BY partition")
            .bind(&self.topic)
            .fetch_all()
            .await?;
        Ok(positions
            .into_iter()
            .map(|p| (p.partition, p.next_offset))
            .collect())
    }

    /// Every identity claim stored so far.
    pub async fn load_claims(&self) -> Result<Vec<IdentityClaim>, SinkError> {
        let rows: Vec<ClaimRow> = self
            .client
            .query("SELECT DISTINCT tenant, kind, time_ms, message_id, from_id, user_id FROM identity_claims")
            .fetch_all()
            .await?;
        Ok(rows.iter().filter_map(ClaimRow::to_claim).collect())
    }
}
