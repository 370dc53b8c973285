//! The ClickHouse sink: writes each completed epoch's rows, then the checkpoint that makes them
//! count.
//!
//! An epoch is complete when the sink's input frontier has passed it: no worker can still send
//! data for it. The sink writes every complete epoch as one batch, and only after ClickHouse
//! acknowledged the rows does it record, per partition, the next offset to read. A crash
//! between the two replays the batch from the older checkpoint; the replayed rows are identical
//! and ReplacingMergeTree collapses them, so every event counts exactly once in query results.

pub mod rows;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clickhouse::{Client, Row};
use operators::{DeadLetter, Decoded};
use schemas::ddl::ServerVersion;
use serde::Deserialize;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use crate::config::ClickHouseConfig;
use crate::metrics::Metrics;
use crate::source::kafka::PendingRecords;
use rows::{CheckpointRow, DeadLetterRow, EventRow};

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

/// Rows of one or more complete epochs, and the source positions they cover.
#[derive(Debug, Default)]
pub struct Batch {
    /// The newest epoch in the batch.
    pub epoch: u64,
    /// `events` rows.
    pub events: Vec<EventRow>,
    /// `_dead_letters` rows.
    pub dead_letters: Vec<DeadLetterRow>,
    /// Per partition, the offset after the last record of the batch.
    pub next_offsets: BTreeMap<i32, i64>,
    /// Records in the batch (events and dead letters).
    pub records: usize,
}

impl Batch {
    fn add(&mut self, topic: &str, outcome: Result<Decoded, DeadLetter>, now_ms: i64) {
        let (partition, offset) = DeadLetter::position(&outcome);
        let next = self.next_offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.records += 1;
        match outcome {
            Ok(decoded) => self.events.push(EventRow::from(decoded)),
            Err(dead) => self
                .dead_letters
                .push(DeadLetterRow::new(topic, dead, now_ms)),
        }
    }
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

    /// Writes the batch's rows, then its checkpoint. Either may be retried: the rows are
    /// idempotent upserts and checkpoints only move forward.
    pub async fn write(&self, batch: &Batch) -> Result<(), SinkError> {
        if !batch.events.is_empty() {
            let mut insert = self.client.insert::<EventRow>("events").await?;
            for row in &batch.events {
                insert.write(row).await?;
            }
            insert.end().await?;
        }
        if !batch.dead_letters.is_empty() {
            let mut insert = self.client.insert::<DeadLetterRow>("_dead_letters").await?;
            for row in &batch.dead_letters {
                insert.write(row).await?;
            }
            insert.end().await?;
        }
        if !batch.next_offsets.is_empty() {
            let written_at = rows::datetime(crate::now_ms() as i64);
            let mut insert = self.client.insert::<CheckpointRow>("_checkpoints").await?;
            for (&partition, &next_offset) in &batch.next_offsets {
                insert
                    .write(&CheckpointRow {
                        topic: self.topic.clone(),
                        partition,
                        next_offset,
                        epoch: batch.epoch,
                        written_at,
                    })
                    .await?;
            }
            insert.end().await?;
        }
        Ok(())
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
}

/// What the sink operator needs besides its input.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The writer.
    pub writer: ClickHouseWriter,
    /// Runs the async client from the (synchronous) worker thread.
    pub runtime: tokio::runtime::Handle,
    /// Set on SIGTERM: stop retrying a failed write (the batch is replayed after restart).
    pub shutdown: Arc<AtomicBool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Longest wait between retries.
    pub max_backoff: Duration,
    /// Topic name, for dead letters.
    pub topic: String,
}

/// Attaches the sink to a stream of decoded records.
pub fn clickhouse_sink(
    stream: StreamVec<'_, u64, Result<Decoded, DeadLetter>>,
    context: SinkContext,
    pending: PendingRecords,
) {
    let mut stash: BTreeMap<u64, Vec<Result<Decoded, DeadLetter>>> = BTreeMap::new();
    stream.sink(Pipeline, "ClickHouseSink", move |(input, frontier)| {
        input.for_each(|capability, data| {
            // Data sent under no capability has no time and holds back no frontier: treat it
            // as belonging to the oldest epoch, which is complete, so it is written at once.
            let epoch = capability.least().copied().unwrap_or(0);
            stash.entry(epoch).or_default().append(data);
        });
        let complete: Vec<u64> = stash
            .keys()
            .copied()
            .take_while(|epoch| !frontier.less_equal(epoch))
            .collect();
        if complete.is_empty() {
            return;
        }
        let now_ms = crate::now_ms() as i64;
        let mut batch = Batch::default();
        for epoch in complete {
            for outcome in stash.remove(&epoch).unwrap_or_default() {
                batch.add(&context.topic, outcome, now_ms);
            }
            batch.epoch = epoch;
        }
        write_with_retry(&context, &batch);
        pending.set(pending.get().saturating_sub(batch.records));
        context.metrics.pending_records.set(pending.get() as i64);
    });
}

/// Retries with exponential backoff until the batch is written. Holding the worker here is
/// deliberate: nothing downstream of an unwritable epoch may be checkpointed, and the source's
/// backpressure bound keeps the other workers from buffering without limit meanwhile.
fn write_with_retry(context: &SinkContext, batch: &Batch) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match context.runtime.block_on(context.writer.write(batch)) {
            Ok(()) => {
                let metrics = &context.metrics;
                metrics
                    .sink_write_duration
                    .observe(started.elapsed().as_secs_f64());
                metrics.events_written.inc_by(batch.events.len() as u64);
                metrics.dead_letters.inc_by(batch.dead_letters.len() as u64);
                if !batch.next_offsets.is_empty() {
                    metrics.checkpoints.inc();
                }
                tracing::debug!(
                    epoch = batch.epoch,
                    events = batch.events.len(),
                    "batch written"
                );
                return;
            }
            Err(error) => {
                context.metrics.sink_failures.inc();
                if context.shutdown.load(Ordering::Relaxed) {
                    tracing::warn!(%error, epoch = batch.epoch, "shutting down with an unwritten batch; it will be replayed from the last checkpoint");
                    return;
                }
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), retry_in_ms = backoff.as_millis() as u64, "ClickHouse write failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(context.max_backoff);
            }
        }
    }
}
