//! The Kafka source: each worker reads the partitions it owns, at explicit offsets.
//!
//! Worker `index` of `peers` owns partition `p` iff `p % peers == index`. Ownership is
//! computed, not negotiated: there is no consumer group and no rebalancing, so a restart with a
//! different `-w`/`-n` simply recomputes it, and every worker starts each of its partitions at
//! the offset recorded in the last checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::SourceRecord;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::sink::checkpoint::PositionsByEpoch;

/// Creates the events topic (with the configured partitions) and the single-partition control
/// topic unless they exist. Idempotent, so every process may call it at start.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()?;
    let replication = || TopicReplication::Fixed(config.replication_factor);
    let topics = [
        NewTopic::new(&config.topic, config.partitions, replication()),
        NewTopic::new(&config.control_topic, 1, replication()),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, ?code, "cannot create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

/// The partitions of one worker and where it reads next in each.
pub struct PartitionReader {
    consumer: BaseConsumer,
    topic: String,
    worker: usize,
    peers: usize,
    /// Next offset to read in each owned partition; `None` until known (start of log).
    positions: BTreeMap<i32, Option<i64>>,
    /// Offsets recorded in the last checkpoint, for partitions this worker may come to own.
    checkpointed: HashMap<i32, i64>,
    refresh_every: Duration,
    last_refresh: Option<Instant>,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("topic", &self.topic)
            .field("worker", &self.worker)
            .field("peers", &self.peers)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl PartitionReader {
    /// A reader for worker `worker` of `peers`, resuming from `checkpointed` offsets.
    pub fn new(
        config: &KafkaConfig,
        worker: usize,
        peers: usize,
        checkpointed: HashMap<i32, i64>,
    ) -> Result<PartitionReader, KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            // Required by librdkafka's consumer even though no group coordination is used:
            // offsets are never committed to Kafka, ClickHouse checkpoints are the truth.
            .set("group.id", "clickstream-engine")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        Ok(PartitionReader {
            consumer,
            topic: config.topic.clone(),
            worker,
            peers,
            positions: BTreeMap::new(),
            checkpointed,
            refresh_every: Duration::from_secs(config.partition_refresh_secs.max(1)),
            last_refresh: None,
        })
    }

    /// Whether this worker owns `partition`.
    pub fn owns(&self, partition: i32) -> bool {
        partition as usize % self.peers == self.worker
    }

    /// Looks for partitions (new ones included) and assigns those this worker owns.
    fn refresh_assignment(&mut self) -> Result<(), KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))?;
        let Some(topic) = metadata
            .topics()
            .iter()
            .find(|topic| topic.name() == self.topic)
        else {
            return Ok(());
        };
        if let Some(error) = topic.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        let owned: Vec<i32> = topic
            .partitions()
            .iter()
            .map(|p| p.id())
            .filter(|&p| self.owns(p))
            .collect();
        let added: Vec<i32> = owned
            .iter()
            .copied()
            .filter(|p| !self.positions.contains_key(p))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        for partition in &added {
            self.positions
                .insert(*partition, self.checkpointed.get(partition).copied());
        }
        let mut assignment = TopicPartitionList::new();
        for (&partition, &position) in &self.positions {
            let offset = position.map_or(Offset::Beginning, Offset::Offset);
            assignment.add_partition_offset(&self.topic, partition, offset)?;
        }
        self.consumer.assign(&assignment)?;
        tracing::info!(worker = self.worker, partitions = ?self.positions, "assigned partitions");
        Ok(())
    }

    /// Reads up to `max` records into `out` without blocking.
    fn poll(&mut self, max: usize, out: &mut Vec<SourceRecord>, metrics: &Metrics) -> usize {
        let due = self
            .last_refresh
            .is_none_or(|last| last.elapsed() >= self.refresh_every);
        if due {
            self.last_refresh = Some(Instant::now());
            if let Err(error) = self.refresh_assignment() {
                metrics.source_errors.inc();
                tracing::warn!(worker = self.worker, %error, "cannot refresh partitions; will retry");
            }
        }
        if self.positions.is_empty() {
            return 0;
        }
        let mut read = 0;
        while read < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    self.positions.insert(partition, Some(offset + 1));
                    out.push(SourceRecord {
                        partition,
                        offset,
                        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                    read += 1;
                }
                Some(Err(error)) => {
                    metrics.source_errors.inc();
                    tracing::warn!(worker = self.worker, %error, "kafka poll error; continuing");
                    break;
                }
            }
        }
        metrics.records_consumed.inc_by(read as u64);
        read
    }
}

/// The epoch (timely timestamp) of a wall-clock instant.
pub fn epoch_of(unix_ms: u64, epoch_ms: u64) -> u64 {
    unix_ms / epoch_ms
}

/// Settings of the source operator.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Epoch length.
    pub epoch_ms: u64,
    /// Records per activation.
    pub max_poll_records: usize,
    /// Most records read but not yet checkpointed; beyond it the worker stops reading.
    pub max_pending_records: usize,
}

/// The source operator: emits records at the current wall-clock epoch, and advances its
/// capability with the clock so that every epoch closes even when no data arrives.
pub fn kafka_source<'s>(
    scope: Scope<'s, u64>,
    reader: PartitionReader,
    settings: SourceSettings,
    positions: PositionsByEpoch,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> StreamVec<'s, u64, SourceRecord> {
    source(scope, "KafkaSource", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut capability = Some(capability);
        let mut reader = reader;
        let mut buffer = Vec::with_capacity(settings.max_poll_records);
        move |output| {
            let Some(cap) = capability.as_mut() else {
                return;
            };
            if shutdown.load(Ordering::Relaxed) {
                tracing::info!(worker = reader.worker, "source stopping");
                capability = None;
                return;
            }
            let epoch = epoch_of(crate::now_ms(), settings.epoch_ms);
            if epoch > *cap.time() {
                cap.downgrade(&epoch);
            }
            let mut read = 0;
            let pending: usize = positions.borrow().values().map(|epoch| epoch.records).sum();
            metrics.pending_records.set(pending as i64);
            if pending < settings.max_pending_records {
                read = reader.poll(settings.max_poll_records, &mut buffer, &metrics);
                if read > 0 {
                    let time = *cap.time();
                    let mut positions = positions.borrow_mut();
                    let epoch = positions.entry(time).or_default();
                    epoch.records += read;
                    for record in &buffer {
                        let next = epoch
                            .next_offsets
                            .entry(record.partition)
                            .or_insert(record.offset + 1);
                        *next = (*next).max(record.offset + 1);
                    }
                    output.session(&cap).give_iterator(buffer.drain(..));
                }
            }
            if read == settings.max_poll_records {
                activator.activate();
            } else {
                // Idle or throttled: look again soon, and at the latest when the epoch turns.
                activator.activate_after(Duration::from_millis(settings.epoch_ms.clamp(1, 20)));
            }
        }
    })
}
