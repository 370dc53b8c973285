//! ClickHouse: schema, row types, and the reads and writes the engine makes.

pub mod io;
pub mod rows;

use std::collections::BTreeMap;

use clickhouse::insert::Insert;
use clickhouse::{Client, Row, RowOwned, RowWrite};
use operators::IdentityClaim;
use schemas::clickhouse_error::{exception_code, is_permanent_code};
use schemas::version::ServerVersion;
use serde::Deserialize;

use crate::clickhouse::rows::ClaimRow;
use crate::config::ClickHouseConfig;
use crate::recovery::{CheckpointState, Recovery};
use rows::{CheckpointRow, EpochPlanRow, LogStallRow, ProgressRow};

/// What [`ClickHouseWriter::insert`] writes: a record that serializes as one row of
/// `Self::Row`. An owned row is its own record. A record can also build a row that borrows
/// from it as it is written (the `events` row borrows every string of the shared event), so
/// the worker hands over the record and the row's strings are never copied: they are
/// serialized straight from the record, on the I/O runtime, when the insert runs.
pub trait InsertRecord: Send + Sync {
    /// The row type the insert names its columns by.
    type Row: Row + RowWrite;
    /// Serializes this record's row into `insert` (see `clickhouse::insert::Insert::write`).
    fn write_to<'i>(
        &'i self,
        insert: &'i mut Insert<Self::Row>,
    ) -> impl Future<Output = clickhouse::error::Result<()>> + Send + 'i;
}

impl<R: RowOwned + RowWrite + Send + Sync> InsertRecord for R {
    type Row = R;
    fn write_to<'i>(
        &'i self,
        insert: &'i mut Insert<R>,
    ) -> impl Future<Output = clickhouse::error::Result<()>> + Send + 'i {
        insert.write(self)
    }
}

/// Why ClickHouse could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The server refused or could not be reached.
    #[error("clickhouse")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// `SELECT version()` returned something unexpected.
    #[error("unrecognised ClickHouse version {0:?}")]
    Version(String),
    /// A table exists with another sort key than this version creates: it was made by an
    /// older clickstream. Writing into it would work but every reader would be slow or wrong,
    /// so the engine refuses to start.
    #[error(
        "table {database}.{table} has `{found}`, this version needs `ORDER BY {expected}`; \
         migrate it (INSERT INTO a new table, then RENAME) or drop the database (deploy/down.sh --purge)"
    )]
    OutdatedTable {
        /// Configured database.
        database: String,
        /// The outdated table.
        table: String,
        /// The sort key this version creates.
        expected: String,
        /// The table's engine clause as the server reports it.
        found: String,
    },
}

impl SinkError {
    /// Whether waiting cannot help: the same request would fail again (see
    /// [`schemas::clickhouse_error::is_permanent_code`]), or the row types do not fit the
    /// client's protocol (a bug or a schema drift). Network errors, timeouts and server
    /// exceptions that may pass (too many parts, memory, a restarting replica) are transient.
    pub fn is_permanent(&self) -> bool {
        use clickhouse::error::Error;
        match self {
            SinkError::OutdatedTable { .. } | SinkError::Version(_) => true,
            SinkError::ClickHouse(Error::BadResponse(text)) => {
                exception_code(text).is_some_and(is_permanent_code)
            }
            SinkError::ClickHouse(
                Error::Network(_)
                | Error::TimedOut
                | Error::Compression(_)
                | Error::Decompression(_)
                | Error::Other(_),
            ) => false,
            SinkError::ClickHouse(_) => true,
        }
    }
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

/// The server's version, as it reports it and as [`schemas::version`] reads it.
pub async fn server_version(client: &Client) -> Result<(String, ServerVersion), SinkError> {
    let VersionRow { version } = client
        .query("SELECT version() AS version")
        .fetch_one()
        .await?;
    let parsed =
        ServerVersion::parse(&version).ok_or_else(|| SinkError::Version(version.clone()))?;
    Ok((version, parsed))
}

/// Creates the database and tables (idempotent) for the server's version; returns it.
pub async fn ensure_schema(config: &ClickHouseConfig) -> Result<ServerVersion, SinkError> {
    let client = client(config);
    let (version, parsed) = server_version(&client).await?;
    let policy = config.storage_policy.as_deref();
    for statement in schemas::ddl::statements_with_policy(&config.database, parsed, policy) {
        client.query(&statement).execute().await?;
    }
    add_missing_columns(&client, &config.database, parsed).await?;
    check_sort_keys(&client, &config.database).await?;
    tracing::info!(%version, database = %config.database, "ClickHouse schema ready");
    Ok(parsed)
}

#[derive(Debug, Row, Deserialize)]
struct ColumnRow {
    table: String,
    name: String,
}

/// Adds the columns of [`schemas::ddl::ADDED_COLUMNS`] that a table created by an older
/// version lacks.
async fn add_missing_columns(
    client: &Client,
    database: &str,
    version: ServerVersion,
) -> Result<(), SinkError> {
    let columns = client
        .query("SELECT table, name FROM system.columns WHERE database = ?")
        .bind(database)
        .fetch_all::<ColumnRow>()
        .await?;
    for (table, column, kind) in schemas::ddl::ADDED_COLUMNS {
        if !columns
            .iter()
            .any(|c| c.table == *table && c.name == *column)
        {
            tracing::info!(
                table,
                column,
                "adding a column to a table of an older version"
            );
            let kind = schemas::ddl::render(kind, database, version);
            client
                .query(&format!(
                    "ALTER TABLE {database}.{table} ADD COLUMN {column} {kind}"
                ))
                .execute()
                .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Row, Deserialize)]
struct EngineRow {
    name: String,
    engine_full: String,
}

/// `CREATE TABLE IF NOT EXISTS` leaves an existing table as it is, so a table created by an
/// older version keeps its old sort key; this finds such tables.
async fn check_sort_keys(client: &Client, database: &str) -> Result<(), SinkError> {
    let tables = client
        .query("SELECT name, engine_full FROM system.tables WHERE database = ?")
        .bind(database)
        .fetch_all::<EngineRow>()
        .await?;
    for (name, template) in schemas::ddl::TABLES {
        let Some(expected) = schemas::ddl::sort_key(template) else {
            continue;
        };
        let Some(table) = tables.iter().find(|table| table.name == *name) else {
            continue;
        };
        if !table.engine_full.contains(&format!("ORDER BY {expected}")) {
            return Err(SinkError::OutdatedTable {
                database: database.to_owned(),
                table: table.name.clone(),
                expected: expected.to_owned(),
                found: table.engine_full.clone(),
            });
        }
    }
    Ok(())
}

#[derive(Debug, Row, Deserialize)]
pub(crate) struct CountRow {
    pub(crate) count: u64,
}

/// The ids of the erasure and removal requests recorded as completed in `_deletions` of the
/// client's database.
pub(crate) async fn completed_erasures(
    client: &Client,
) -> Result<std::collections::HashSet<String>, SinkError> {
    #[derive(Debug, Row, Deserialize)]
    struct IdRow {
        request_id: String,
    }
    let rows: Vec<IdRow> = client
        .query("SELECT DISTINCT request_id FROM _deletions WHERE status = 'completed'")
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|row| row.request_id).collect())
}

/// Waits until `table` of the client's database has no unfinished mutation.
pub(crate) async fn await_mutations(client: &Client, table: &str) -> Result<(), SinkError> {
    loop {
        let CountRow { count } = client
            .query(
                "SELECT count() AS count FROM system.mutations \
                 WHERE database = currentDatabase() AND table = ? AND is_done = 0",
            )
            .bind(table)
            .fetch_one()
            .await?;
        if count == 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Whether every table of the schema exists. Processes other than the first wait for this
/// instead of running DDL themselves: ClickHouse 18.16 can corrupt a database (registered,
/// but without its metadata directory) when two connections create it at the same time.
/// Columns added to older tables count too: a process that read `_checkpoints` before
/// process 0 added `log_mark` would stop on an unknown column.
pub async fn schema_ready(config: &ClickHouseConfig) -> Result<bool, SinkError> {
    let names: Vec<&str> = schemas::ddl::TABLES.iter().map(|(name, _)| *name).collect();
    let CountRow { count } = client(config)
        .query("SELECT count() AS count FROM system.tables WHERE database = ? AND has(?, name)")
        .bind(&config.database)
        .bind(names.as_slice())
        .fetch_one()
        .await?;
    if count as usize != names.len() {
        return Ok(false);
    }
    let added: Vec<String> = schemas::ddl::ADDED_COLUMNS
        .iter()
        .map(|(table, column, _)| format!("{table}.{column}"))
        .collect();
    let CountRow { count } = client(config)
        .query(
            "SELECT count() AS count FROM system.columns \
             WHERE database = ? AND has(?, concat(table, '.', name))",
        )
        .bind(&config.database)
        .bind(added.as_slice())
        .fetch_one()
        .await?;
    Ok(count as usize == added.len())
}

/// The columns of [`LogStallRow`] after `topic, partition`, each partition's newest row
/// (aliases differ from the columns: 18.16 would substitute an alias named like a column
/// into the other aggregates).
const OPEN_LOG_STALL_COLUMNS: &str = "argMax(reason, detected_at_ms) AS last_reason, \
     argMax(expected_offset, detected_at_ms) AS last_expected, \
     argMax(found_offset, detected_at_ms) AS last_found, max(detected_at_ms) AS last_detected, \
     argMax(resolved, detected_at_ms) AS last_resolved";

/// Reads and writes the engine's tables.
#[derive(Debug, Clone)]
pub struct ClickHouseWriter {
    client: Client,
    topic: String,
}

#[derive(Debug, Row, Deserialize)]
struct CheckpointStateRow {
    partition: i32,
    epoch: u64,
    low_water: i64,
    low_water_epoch: u64,
    next_offset: i64,
    log_mark: u64,
}

#[derive(Debug, Row, Deserialize)]
struct PlanRow {
    partition: i32,
    epoch: u64,
    next_offset: i64,
}

#[derive(Debug, Row, Deserialize)]
struct LastEpochRow {
    last: u64,
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
    pub async fn insert<R: InsertRecord>(&self, table: &str, rows: &[R]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<R::Row>(table).await?;
        for row in rows {
            row.write_to(&mut insert).await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// The client, for the statements a table's sink owns (they depend on its row type).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Records checkpoint `epoch`: every record below each partition's next offset is
    /// reflected in every table.
    pub async fn checkpoint(&self, rows: &[CheckpointRow]) -> Result<(), SinkError> {
        self.insert("_checkpoints", rows).await
    }

    /// Records where epoch `epoch` ends in each partition it read.
    pub async fn plan_epoch(
        &self,
        epoch: u64,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<(), SinkError> {
        let written_at = rows::datetime(crate::now_ms() as i64);
        let rows: Vec<EpochPlanRow> = next_offsets
            .iter()
            .map(|(&partition, &next_offset)| EpochPlanRow {
                topic: self.topic.clone(),
                partition,
                epoch,
                next_offset,
                written_at,
            })
            .collect();
        self.insert("_epochs", &rows).await
    }

    /// Every epoch plan of this writer's topic as `(epoch, next_offset)`: the control
    /// topic's (one partition, few rows: only epochs that read a control record have one).
    pub async fn load_single_partition_plan(&self) -> Result<Vec<(u64, i64)>, SinkError> {
        let rows: Vec<PlanRow> = self
            .client
            .query("SELECT partition, epoch, next_offset FROM _epochs WHERE topic = ? AND partition = 0")
            .bind(&self.topic)
            .fetch_all()
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.epoch, row.next_offset))
            .collect())
    }

    /// The newest checkpoint of every partition and the epoch plans a restart replays.
    pub async fn load_recovery(&self) -> Result<Recovery, SinkError> {
        let checkpoints: Vec<CheckpointState> = self
            .client
            .query(
                "SELECT partition, epoch, low_water, low_water_epoch, next_offset, log_mark \
                 FROM _checkpoints FINAL WHERE topic = ?",
            )
            .bind(&self.topic)
            .fetch_all::<CheckpointStateRow>()
            .await?
            .into_iter()
            .map(|row| CheckpointState {
                partition: row.partition,
                epoch: row.epoch,
                low_water: row.low_water,
                low_water_epoch: row.low_water_epoch,
                next_offset: row.next_offset,
                log_mark: row.log_mark,
            })
            .collect();
        let plans: Vec<(i32, u64, i64)> = self
            .client
            .query(
                "SELECT partition, epoch, next_offset FROM _epochs WHERE topic = ? AND epoch >= ?",
            )
            .bind(&self.topic)
            .bind(Recovery::oldest_needed_epoch(&checkpoints))
            .fetch_all::<PlanRow>()
            .await?
            .into_iter()
            .map(|row| (row.partition, row.epoch, row.next_offset))
            .collect();
        let mut recovery = Recovery::assemble(&checkpoints, &plans);
        // Plans older than every low water were not loaded; the newest epoch still counts.
        let LastEpochRow { last } = self
            .client
            .query("SELECT max(epoch) AS last FROM _epochs WHERE topic = ?")
            .bind(&self.topic)
            .fetch_one()
            .await?;
        recovery.last_planned_epoch = recovery.last_planned_epoch.max(last);
        Ok(recovery)
    }

    /// Records partitions whose log is not the one the checkpoints describe, or (rows with
    /// `resolved = 1`) that it is again.
    pub async fn log_stalls(&self, rows: &[LogStallRow]) -> Result<(), SinkError> {
        self.insert("_log_stalls", rows).await
    }

    /// Makes `partitions` start afresh, keeping every result: their identity claims are kept
    /// as claims that precede every replay (offset -1, so the identity map survives the new
    /// log), then their epoch plans and last their checkpoints are deleted (mutations,
    /// awaited). Safe to repeat after a crash at any step: the checkpoints, which carry the
    /// fingerprint that makes the log a mismatch, go last, so a repeated call still finds the
    /// mismatch; copies of claims are identical rows.
    pub async fn forget_partitions(&self, partitions: &[i32]) -> Result<(), SinkError> {
        self.client
            .query(
                "INSERT INTO identity_claims SELECT tenant, kind, time_ms, message_id, from_id, \
                 user_id, partition, -1 FROM identity_claims WHERE has(?, partition) AND offset >= 0",
            )
            .bind(partitions)
            .execute()
            .await?;
        let claims = "has(?, partition) AND offset >= 0";
        self.delete_and_wait("identity_claims", claims, None, partitions)
            .await?;
        for table in ["_epochs", "_checkpoints"] {
            let of_topic = "topic = ? AND has(?, partition)";
            self.delete_and_wait(table, of_topic, Some(&self.topic), partitions)
                .await?;
        }
        Ok(())
    }

    /// `ALTER TABLE table DELETE WHERE condition`, its `?`s bound to `topic` (when given)
    /// and `partitions`, awaited.
    async fn delete_and_wait(
        &self,
        table: &str,
        condition: &str,
        topic: Option<&str>,
        partitions: &[i32],
    ) -> Result<(), SinkError> {
        let mut delete = self
            .client
            .query(&format!("ALTER TABLE {table} DELETE WHERE {condition}"));
        if let Some(topic) = topic {
            delete = delete.bind(topic);
        }
        delete.bind(partitions).execute().await?;
        await_mutations(&self.client, table).await
    }

    /// The open stalls of this topic: per partition, its newest row if it is unresolved.
    /// (Not `FINAL … WHERE resolved = 0`: ClickHouse before 21.8 may apply that condition
    /// before `FINAL` merges, and return a stall a newer row resolved.)
    pub async fn open_log_stalls(&self) -> Result<Vec<LogStallRow>, SinkError> {
        Ok(self
            .client
            .query(&format!(
                "SELECT topic, partition, {OPEN_LOG_STALL_COLUMNS} FROM _log_stalls WHERE topic = ? \
                 GROUP BY topic, partition HAVING last_resolved = 0"
            ))
            .bind(&self.topic)
            .fetch_all::<LogStallRow>()
            .await?)
    }

    /// Writes the progress of every tenant.
    pub async fn progress(&self, rows: &[ProgressRow]) -> Result<(), SinkError> {
        self.insert("_progress", rows).await
    }

    /// The ids of the erasure and removal requests recorded as completed in `_deletions`.
    pub async fn completed_erasures(&self) -> Result<std::collections::HashSet<String>, SinkError> {
        completed_erasures(&self.client).await
    }

    /// The stored identity claims a restart will not replay (made below the low water).
    pub async fn load_claims(&self, recovery: &Recovery) -> Result<Vec<IdentityClaim>, SinkError> {
        let rows: Vec<ClaimRow> = self
            .client
            .query(
                "SELECT DISTINCT tenant, kind, time_ms, message_id, from_id, user_id, partition, \
                 offset FROM identity_claims",
            )
            .fetch_all()
            .await?;
        Ok(rows
            .iter()
            .filter(|row| recovery.claim_precedes_replay(row.partition, row.offset))
            .filter_map(ClaimRow::to_claim)
            .collect())
    }
}
