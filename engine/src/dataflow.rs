//! What each timely worker runs.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use operators::Decode;
use timely::worker::Worker;

use crate::config::EngineConfig;
use crate::metrics::Metrics;
use crate::sink::clickhouse::{ClickHouseWriter, SinkContext, SinkError, clickhouse_sink};
use crate::source::kafka::{PartitionReader, SourceSettings, kafka_source};

/// Shared by every worker of a process.
#[derive(Debug, Clone)]
pub struct EngineContext {
    /// Configuration.
    pub config: EngineConfig,
    /// Runtime for the async clients.
    pub runtime: tokio::runtime::Handle,
    /// Set on SIGTERM/ctrl-c.
    pub shutdown: Arc<AtomicBool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Kafka consumer could not be created.
    #[error("kafka")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Shut down before the checkpoint could be read.
    #[error("shut down while loading the checkpoint")]
    Interrupted,
}

/// Builds this worker's part of the dataflow and runs it until shutdown.
pub fn run_worker(worker: &mut Worker, context: &EngineContext) -> Result<(), WorkerError> {
    let EngineConfig {
        epoch_ms,
        kafka,
        clickhouse,
        metrics: _,
    } = &context.config;
    let (index, peers) = (worker.index(), worker.peers());
    let writer = ClickHouseWriter::new(clickhouse, &kafka.topic);
    let checkpointed = load_checkpoints_with_retry(&writer, context)?;
    tracing::info!(
        worker = index,
        peers,
        checkpointed = checkpointed.len(),
        "worker starting"
    );

    let reader = PartitionReader::new(kafka, index, peers, checkpointed)?;
    let settings = SourceSettings {
        epoch_ms: *epoch_ms,
        max_poll_records: kafka.max_poll_records,
        max_pending_records: kafka.max_pending_records,
    };
    let sink_context = SinkContext {
        writer,
        runtime: context.runtime.clone(),
        shutdown: context.shutdown.clone(),
        metrics: context.metrics.clone(),
        max_backoff: Duration::from_millis(clickhouse.max_retry_backoff_ms),
        topic: kafka.topic.clone(),
    };
    let pending = Rc::new(Cell::new(0));
    worker.dataflow::<u64, _, _>(|scope| {
        let records = kafka_source(
            scope,
            reader,
            settings,
            pending.clone(),
            context.shutdown.clone(),
            context.metrics.clone(),
        );
        clickhouse_sink(records.decode(), sink_context, pending);
    });

    let park = Duration::from_millis((*epoch_ms / 4).clamp(1, 50));
    while worker.step_or_park(Some(park)) {}
    tracing::info!(worker = index, "worker finished");
    Ok(())
}

fn load_checkpoints_with_retry(
    writer: &ClickHouseWriter,
    context: &EngineContext,
) -> Result<HashMap<i32, i64>, WorkerError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match context.runtime.block_on(writer.load_checkpoints()) {
            Ok(positions) => return Ok(positions),
            Err(error) => {
                let error: SinkError = error;
                if context.shutdown.load(Ordering::Relaxed) {
                    return Err(WorkerError::Interrupted);
                }
                tracing::warn!(%error, "cannot read checkpoints; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
