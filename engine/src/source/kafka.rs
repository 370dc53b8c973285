//! The Kafka source: each worker reads the partitions it owns, at explicit offsets.
//!
//! Worker `index` of `peers` owns partition `p` iff `p % peers == index`. Ownership is
//! computed, not negotiated: there is no consumer group and no rebalancing, so a restart with a
//! different `-w`/`-n` simply recomputes it, and every worker starts each of its partitions at
//! the low water of the last checkpoint, replaying the epochs the last run planned (see
//! [`crate::recovery`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::SourceRecord;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use crate::clickhouse::ClickHouseWriter;
use crate::clickhouse::io::IoRuntime;
use crate::config::KafkaConfig;
use crate::metrics::{Metrics, PartitionLabels, WorkerLabels};
use crate::recovery::{PartitionRecovery, Recovery};
use crate::retry::stop;
use crate::source::log_check::{LogGuard, LogProbe, Mismatch, fingerprint};
use crate::source::positions::{EpochPositions, PositionsByEpoch};

/// Creates the events topic (with the configured partitions) and the single-partition control
/// topic unless they exist. Idempotent, so every process may call it at start.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .create()?;
    // Only what is missing is created: a deployment whose topics exist needs no admin rights.
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    let exists = |name: &str| {
        metadata
            .topics()
            .iter()
            .any(|topic| topic.name() == name && topic.error().is_none())
    };
    let replication = || TopicReplication::Fixed(config.replication_factor);
    let topics: Vec<NewTopic<'_>> = [
        NewTopic::new(&config.topic, config.partitions, replication()),
        // Erasures and unmerges must outlive every replay: the control topic never expires.
        NewTopic::new(&config.control_topic, 1, replication()).set("retention.ms", "-1"),
    ]
    .into_iter()
    .filter(|topic| !exists(topic.name))
    .collect();
    if topics.is_empty() {
        return Ok(());
    }
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

/// The consumer's context: end-of-partition is how the reader learns that it has caught up
/// (it asks for `enable.partition.eof`), not an error, so librdkafka's report of it is kept
/// out of the error log; everything else is logged as before. librdkafka's periodic
/// statistics give the consumer lag per partition.
#[derive(Debug, Clone, Default)]
pub struct SourceContext {
    metrics: Option<Arc<Metrics>>,
    /// The worker whose consumer this is (the fetch queue is gauged per worker).
    worker: u32,
}

impl SourceContext {
    /// A context that publishes worker `worker`'s consumer lag and fetch queue to `metrics`.
    pub fn new(metrics: Arc<Metrics>, worker: usize) -> SourceContext {
        SourceContext {
            metrics: Some(metrics),
            worker: worker as u32,
        }
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let mut fetch_queue = 0;
        for partition in statistics
            .topics
            .values()
            .flat_map(|topic| topic.partitions.values())
        {
            // librdkafka's own `consumer_lag` counts from the committed offset, and this
            // consumer commits nothing (ClickHouse checkpoints are the truth): the lag is the
            // high watermark minus the next offset the application reads.
            // Before anything is delivered, the next offset to fetch is the position (the start
            // of the log would count the whole retained log as lag).
            let position = if partition.app_offset >= 0 {
                partition.app_offset
            } else {
                partition.next_offset
            };
            if partition.partition < 0 {
                continue;
            }
            // Every partition's fetch queue forwards to the consumer's one queue, and
            // librdkafka reports that queue's size for each of them.
            fetch_queue = fetch_queue.max(partition.fetchq_size);
            if partition.hi_offset < 0 || position < 0 {
                continue;
            }
            metrics
                .consumer_lag
                .get_or_create(&PartitionLabels {
                    partition: partition.partition,
                })
                .set(partition.hi_offset - position);
        }
        metrics
            .fetch_queue_bytes
            .get_or_create(&WorkerLabels {
                worker: self.worker,
            })
            .set(i64::try_from(fetch_queue).unwrap_or(i64::MAX));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // End of partition is how the reader learns it caught up, not a fault; librdkafka
        // reports it both per partition and as a global code.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::trace!(%error, reason, "end of partition");
        } else {
            tracing::error!(%error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for SourceContext {}

/// The partitions of one worker, where it reads next in each, and, while it replays, which
/// epoch each record belongs to.
pub struct PartitionReader {
    consumer: BaseConsumer<SourceContext>,
    topic: String,
    /// For reading single records back when the log looks shorter than expected.
    kafka: KafkaConfig,
    worker: usize,
    peers: usize,
    /// Next offset to read in each owned partition; `None` until known (start of log).
    positions: BTreeMap<i32, Option<i64>>,
    /// What the last run left, for partitions this worker may come to own.
    recovery: HashMap<i32, PartitionRecovery>,
    /// Per owned partition, the planned epochs still to replay, oldest first.
    plans: HashMap<i32, VecDeque<(u64, i64)>>,
    /// Per partition, when it was last found fully read (end of partition), until a record
    /// arrives after that.
    caught_up_at: HashMap<i32, i64>,
    /// Per replaying partition, when its plan's last record was last read back.
    plan_end_probed_at: HashMap<i32, i64>,
    /// Owned partitions paused while a replay over the pending bound reads only what the
    /// oldest planned epoch needs.
    paused: BTreeSet<i32>,
    /// Per partition, the broker timestamp of the last record read.
    last_timestamp: HashMap<i32, i64>,
    /// Owned partitions whose log is not the one an earlier run read, found while reading.
    mismatches: BTreeMap<i32, Mismatch>,
    /// Whether `mismatches` changed since [`PartitionReader::changed_mismatches`] last looked.
    mismatches_changed: bool,
    /// An out-of-range error is waiting for [`PartitionReader::recheck_out_of_range`].
    out_of_range: bool,
    /// When the partitions were last checked after an out-of-range error.
    out_of_range_checked: Option<Instant>,
    /// Whether the partitions have been listed at least once: until then no epoch may close,
    /// since a partition's replay plan could still start at it.
    assignment_known: bool,
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

/// The librdkafka settings of a worker's consumer, with what librdkafka may read ahead of
/// the worker bounded by `config.max_fetch_queue_bytes`.
pub fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        // Required by librdkafka's consumer even though no group coordination is used:
        // offsets are never committed to Kafka, ClickHouse checkpoints are the truth.
        .set("group.id", "clickstream-engine")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Never jump elsewhere in a log: an offset the log does not have means the log is
        // not the one the checkpoints describe (see `log_check`).
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .set(
            "queued.max.messages.kbytes",
            (config.max_fetch_queue_bytes / 1024).to_string(),
        )
        .set("statistics.interval.ms", "5000");
    client
}

impl PartitionReader {
    /// A reader for worker `worker` of `peers`, replaying what `recovery` says, publishing its
    /// consumer lag to `metrics`.
    pub fn new(
        config: &KafkaConfig,
        worker: usize,
        peers: usize,
        recovery: &Recovery,
        metrics: Arc<Metrics>,
    ) -> Result<PartitionReader, KafkaError> {
        let consumer: BaseConsumer<SourceContext> =
            consumer_config(config).create_with_context(SourceContext::new(metrics, worker))?;
        Ok(PartitionReader {
            consumer,
            topic: config.topic.clone(),
            kafka: config.clone(),
            worker,
            peers,
            positions: BTreeMap::new(),
            recovery: recovery.partitions.clone(),
            plans: HashMap::new(),
            caught_up_at: HashMap::new(),
            plan_end_probed_at: HashMap::new(),
            paused: BTreeSet::new(),
            last_timestamp: HashMap::new(),
            mismatches: BTreeMap::new(),
            mismatches_changed: false,
            out_of_range: false,
            out_of_range_checked: None,
            assignment_known: false,
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
        self.assignment_known = true;
        let added: Vec<i32> = owned
            .iter()
            .copied()
            .filter(|p| !self.positions.contains_key(p))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        for partition in &added {
            let recovery = self.recovery.remove(partition).unwrap_or_default();
            let start = (recovery.replay_from > 0).then_some(recovery.replay_from);
            self.positions.insert(*partition, start);
            if !recovery.plan.is_empty() {
                self.plans.insert(*partition, recovery.plan);
            }
        }
        self.assign_at_positions()?;
        tracing::info!(worker = self.worker, partitions = ?self.positions, replaying = self.plans.len(), "assigned partitions");
        Ok(())
    }

    /// (Re)assigns every owned partition but the paused ones at its position. After an
    /// out-of-range error the consumer fetches nothing more from that partition until it is
    /// assigned again. Partitions are paused by leaving them out rather than with librdkafka's
    /// pause, so that reading resumes where this reader's positions say (the truth a restart
    /// uses too), not where librdkafka last delivered.
    fn assign_at_positions(&self) -> Result<(), KafkaError> {
        let mut assignment = TopicPartitionList::new();
        for (&partition, &position) in &self.positions {
            if self.paused.contains(&partition) {
                continue;
            }
            let offset = position.map_or(Offset::Beginning, Offset::Offset);
            assignment.add_partition_offset(&self.topic, partition, offset)?;
        }
        self.consumer.assign(&assignment)
    }

    /// Whether this worker still replays epochs an earlier run planned.
    pub fn replaying(&self) -> bool {
        !self.plans.is_empty()
    }

    /// Chooses the partitions the next polls read (see [`partitions_to_pause`]) and assigns
    /// them; on an error the choice is dropped, so the next call tries again.
    pub fn throttle(&mut self, over_bound: bool) -> Result<(), KafkaError> {
        let paused = partitions_to_pause(self.positions.keys().copied(), &self.plans, over_bound);
        if paused == self.paused {
            return Ok(());
        }
        if self.paused.is_empty() {
            tracing::info!(
                worker = self.worker,
                ?paused,
                "replay past the pending bound: reading only the partitions its oldest epoch needs"
            );
        }
        let previous = std::mem::replace(&mut self.paused, paused);
        let assigned = self.assign_at_positions();
        if assigned.is_err() {
            self.paused = previous;
        }
        assigned
    }

    /// Makes sure the owned partitions are known (and their plans loaded) before the first
    /// epoch is chosen.
    pub fn assign_now(&mut self, metrics: &Metrics) {
        self.last_refresh = Some(Instant::now());
        if let Err(error) = self.refresh_assignment() {
            metrics.source_errors.inc();
            tracing::warn!(worker = self.worker, %error, "cannot list partitions; will retry");
        }
    }

    /// Reads up to `max` records into `out` without blocking.
    fn poll(&mut self, max: usize, out: &mut Vec<SourceRecord>, metrics: &Metrics) -> usize {
        let due = self
            .last_refresh
            .is_none_or(|last| last.elapsed() >= self.refresh_every);
        if due {
            self.assign_now(metrics);
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
                    if self.already_read(partition, offset) {
                        tracing::trace!(
                            partition,
                            offset,
                            "record of an earlier assignment dropped"
                        );
                        continue;
                    }
                    self.positions.insert(partition, Some(offset + 1));
                    self.caught_up_at.remove(&partition);
                    self.mismatches_changed |= self.mismatches.remove(&partition).is_some();
                    if let Some(timestamp) = message.timestamp().to_millis() {
                        self.last_timestamp.insert(partition, timestamp);
                    }
                    out.push(SourceRecord {
                        partition,
                        offset,
                        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    });
                    read += 1;
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    self.caught_up_at.insert(partition, crate::now_ms() as i64);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    // A position the log does not have: it was truncated or replaced.
                    metrics.source_errors.inc();
                    self.out_of_range = true;
                    break;
                }
                Some(Err(error)) => {
                    metrics.source_errors.inc();
                    tracing::warn!(worker = self.worker, %error, "kafka poll error; continuing");
                    break;
                }
            }
        }
        if !self.plans.is_empty() {
            self.check_stalled_plans();
        }
        self.recheck_out_of_range();
        metrics.records_consumed.inc_by(read as u64);
        read
    }

    /// A record fetched under an earlier assignment of its partition and delivered after the
    /// partition was assigned again at a later position: reading it would count it twice.
    fn already_read(&self, partition: i32, offset: i64) -> bool {
        let next = self.positions.get(&partition).copied().flatten();
        next.is_some_and(|next| offset < next)
    }

    /// After an out-of-range error, at most every [`OUT_OF_RANGE_RECHECK`]: notes the
    /// partitions whose log lost the last record read, clears those whose log has it again,
    /// and assigns every partition again at its position, so a log that comes back is read.
    fn recheck_out_of_range(&mut self) {
        let due = self
            .out_of_range_checked
            .is_none_or(|checked| checked.elapsed() >= OUT_OF_RANGE_RECHECK);
        if !self.out_of_range || !due {
            return;
        }
        self.out_of_range = false;
        self.out_of_range_checked = Some(Instant::now());
        self.find_truncated_partitions();
        if let Err(error) = self.assign_at_positions() {
            self.out_of_range = true;
            tracing::warn!(worker = self.worker, %error, "cannot assign the partitions again; will retry");
        }
    }

    /// Owned partitions whose log no longer holds the last record read: the log this worker
    /// was reading lost records or was replaced. Read back, never taken from the high
    /// watermark (tansu's lags behind the log's end).
    fn find_truncated_partitions(&mut self) {
        let positions: Vec<(i32, i64)> = self
            .positions
            .iter()
            .filter_map(|(&partition, position)| Some((partition, (*position)?)))
            .filter(|(_, position)| *position > 0)
            .collect();
        for (partition, position) in positions {
            self.probe_end(partition, position);
        }
    }

    /// Notes a mismatch when the log has no record at `expected_end - 1`.
    fn probe_end(&mut self, partition: i32, expected_end: i64) {
        let found = LogProbe::new(&self.kafka).and_then(|probe| {
            let found = probe.record_at(partition, expected_end - 1)?;
            // The end as the broker reports it, for the record of the stall only.
            let log_end = match found {
                None => probe.watermarks(partition)?.1,
                Some(_) => expected_end,
            };
            Ok((found, log_end))
        });
        match found {
            Ok((None, log_end)) => self.note_mismatch(Mismatch::Shorter {
                partition,
                expected_end,
                log_end,
            }),
            Ok((Some(_), _)) => {
                self.mismatches_changed |= self.mismatches.remove(&partition).is_some();
            }
            Err(error) => {
                tracing::warn!(worker = self.worker, partition, %error, "cannot read the log back");
            }
        }
    }

    fn note_mismatch(&mut self, mismatch: Mismatch) {
        let partition = mismatch.partition();
        if self.mismatches.get(&partition) != Some(&mismatch) {
            self.mismatches.insert(partition, mismatch);
            self.mismatches_changed = true;
        }
    }

    /// The partitions whose log is not the one an earlier run read, when that set changed
    /// since the last call.
    pub fn changed_mismatches(&mut self) -> Option<Vec<Mismatch>> {
        if !std::mem::take(&mut self.mismatches_changed) {
            return None;
        }
        Some(self.mismatches.values().cloned().collect())
    }

    /// A plan that expects records past the end of the log cannot be replayed faithfully:
    /// the log is not the one the earlier run read. A partition that replays a plan but has
    /// sat at its end (as the broker reports it) for [`PLAN_END_GRACE_MS`] has the plan's last
    /// record read back (once per grace period); without it, the reader notes a mismatch,
    /// keeps waiting for the records (a lagging replica may still deliver them), and the
    /// source records the stall and gives up after the log-loss timeout.
    fn check_stalled_plans(&mut self) {
        let now = crate::now_ms() as i64;
        let due: Vec<(i32, i64)> = self
            .plans
            .iter()
            // A partition left out of the assignment is not at its end, whatever it last said.
            .filter(|(partition, _)| !self.paused.contains(partition))
            .filter_map(|(&partition, plan)| {
                let plan_end = plan.back()?.1;
                let at_end_since = *self.caught_up_at.get(&partition)?;
                let since = self
                    .plan_end_probed_at
                    .get(&partition)
                    .map_or(at_end_since, |probed| at_end_since.max(*probed));
                let position = self.positions.get(&partition).copied().flatten();
                // Records already read but not yet given their epochs are not missing.
                let behind = position.is_none_or(|position| position < plan_end);
                (behind && now - since >= PLAN_END_GRACE_MS).then_some((partition, plan_end))
            })
            .collect();
        for (partition, plan_end) in due {
            self.plan_end_probed_at.insert(partition, now);
            self.probe_end(partition, plan_end);
        }
    }

    /// The epoch an earlier run gave the record at `offset`, while replaying; `None` for a
    /// record read for the first time.
    pub fn planned_epoch(&mut self, partition: i32, offset: i64) -> Option<u64> {
        let plan = self.plans.get_mut(&partition)?;
        let epoch = crate::recovery::planned_epoch(plan, offset);
        if plan.is_empty() {
            self.plans.remove(&partition);
            tracing::info!(worker = self.worker, partition, "replay finished");
        }
        epoch
    }

    /// The oldest epoch still to be replayed on any owned partition.
    pub fn earliest_planned_epoch(&self) -> Option<u64> {
        self.plans
            .values()
            .filter_map(|plan| plan.front().map(|&(epoch, _)| epoch))
            .min()
    }

    /// Per owned partition, the receive time up to which everything has been read: the moment
    /// it was last found fully read, else the broker timestamp of its last record (0 before
    /// either is known).
    pub fn received_until(&self) -> BTreeMap<i32, i64> {
        self.positions
            .keys()
            .map(|p| {
                let until = self
                    .caught_up_at
                    .get(p)
                    .or_else(|| self.last_timestamp.get(p))
                    .copied()
                    .unwrap_or(0);
                (*p, until)
            })
            .collect()
    }
}

/// A replay that cannot be faithful.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A replayed record arrived after its planned epoch had closed.
    #[error(
        "record {partition}/{offset} was planned for epoch {planned}, but the source is already at epoch {current}"
    )]
    PastPlannedEpoch {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// The epoch the crashed run gave it.
        planned: u64,
        /// The source's current epoch.
        current: u64,
    },
}

/// The owned partitions a worker leaves out of its assignment. Over the pending bound
/// (`over_bound`), a replay reads only the partitions whose plans hold the oldest planned
/// epoch open: the capability stays at that epoch until each has delivered its part, so
/// nothing is checkpointed, and the pending count cannot fall, until they have. Reading
/// nothing there would wait forever; reading everything would hold the whole replay in
/// memory. Otherwise (under the bound, or live) every partition is read.
pub fn partitions_to_pause(
    owned: impl Iterator<Item = i32>,
    plans: &HashMap<i32, VecDeque<(u64, i64)>>,
    over_bound: bool,
) -> BTreeSet<i32> {
    let front = |partition: &i32| plans.get(partition).and_then(VecDeque::front).map(|f| f.0);
    let oldest = plans
        .values()
        .filter_map(|plan| plan.front())
        .map(|f| f.0)
        .min();
    match oldest.filter(|_| over_bound) {
        None => BTreeSet::new(),
        Some(oldest) => owned
            .filter(|partition| front(partition) != Some(oldest))
            .collect(),
    }
}

/// How often, at most, partitions are read back and assigned again after out-of-range errors.
const OUT_OF_RANGE_RECHECK: Duration = Duration::from_secs(5);

/// How long a replaying partition may sit at the log's end before the plan's last record is
/// read back: the end the broker reports can lag behind the log's (tansu 0.6).
const PLAN_END_GRACE_MS: i64 = 2_000;

/// A source's stall on a log that is not the one an earlier run read.
#[derive(Debug, Default)]
struct LogStall {
    /// Since when, and what is recorded.
    open: Option<(Instant, Vec<Mismatch>)>,
}

impl LogStall {
    /// Records the reader's changed mismatches, and resolves the partitions no longer among
    /// them. The stall lasts, and its timeout runs, from its first mismatch until none is left.
    fn note(&mut self, guard: &LogGuard, mismatches: Vec<Mismatch>) {
        let (since, recorded) = self
            .open
            .take()
            .unwrap_or_else(|| (Instant::now(), Vec::new()));
        let now = crate::now_ms() as i64;
        let gone: Vec<_> = recorded
            .iter()
            .filter(|old| {
                mismatches
                    .iter()
                    .all(|new| new.partition() != old.partition())
            })
            .map(|old| old.row(guard.writer.topic(), now))
            .collect();
        if !gone.is_empty() {
            guard.resolve(gone);
        }
        if !mismatches.is_empty() {
            guard.record(&mismatches);
            self.open = Some((since, mismatches));
        }
    }

    /// Exits once the stall has lasted the log-loss timeout.
    fn give_up_when_due(&self, guard: &LogGuard) {
        if let Some((since, mismatches)) = &self.open
            && since.elapsed() >= guard.timeout
        {
            guard.give_up(mismatches);
        }
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
    /// Most records read but not yet checkpointed; beyond it the worker stops reading, except
    /// what the oldest epoch of a replay needs (see [`PartitionReader::throttle`]).
    pub max_pending_records: usize,
    /// Most payload bytes (as read from the log) of those records; the same rule applies
    /// beyond it.
    pub max_pending_bytes: usize,
    /// The first epoch that may receive records read for the first time (after every planned
    /// epoch of the last run).
    pub first_live_epoch: u64,
}

impl SourceSettings {
    /// Whether `records` pending, of `bytes` payload bytes, reach either pending bound.
    pub fn over_pending_bound(&self, records: usize, bytes: usize) -> bool {
        records >= self.max_pending_records || bytes >= self.max_pending_bytes
    }
}

/// Where the source records its epoch plans, and the stalls of a log that is not the one
/// an earlier run read.
#[derive(Debug, Clone)]
pub struct Planner {
    /// The plans' table.
    pub writer: ClickHouseWriter,
    /// Retries.
    pub sink: IoRuntime,
    /// Stalls.
    pub guard: LogGuard,
}

impl Planner {
    /// Makes the plans of the `epochs` that read records for the first time (from
    /// `first_live_epoch` on) durable, retrying until they are: the frontier passes them next,
    /// and a sink may then write them.
    fn plan(
        &self,
        positions: &BTreeMap<u64, EpochPositions>,
        epochs: impl std::ops::RangeBounds<u64>,
        first_live_epoch: u64,
    ) {
        for (&epoch, read) in positions.range(epochs) {
            if epoch >= first_live_epoch && !read.next_offsets.is_empty() {
                self.sink.write_with_retry("epoch plan", || {
                    self.writer.plan_epoch(epoch, &read.next_offsets)
                });
            }
        }
    }
}

/// The source operator. Replayed records go to the epochs an earlier run gave them; new ones
/// to the current wall-clock epoch (never earlier than `first_live_epoch`). The capability
/// follows the oldest epoch still to be replayed, then the clock, so every epoch closes even
/// when no data arrives; before it passes a live epoch, the epoch's plan is made durable.
pub fn kafka_source<'s>(
    scope: Scope<'s, u64>,
    reader: PartitionReader,
    settings: SourceSettings,
    planner: Planner,
    positions: PositionsByEpoch,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> StreamVec<'s, u64, SourceRecord> {
    source(scope, "KafkaSource", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut capability = Some(capability);
        let mut reader = reader;
        reader.assign_now(&metrics);
        let mut buffer = Vec::with_capacity(settings.max_poll_records);
        let mut log_stall = LogStall::default();
        move |output| {
            let Some(cap) = capability.as_mut() else {
                return;
            };
            if shutdown.load(Ordering::Relaxed) {
                tracing::info!(worker = reader.worker, "source stopping");
                // The open epochs are finished and written on the way out: plan them first,
                // or a restart would read their records into other epochs.
                planner.plan(
                    &positions.borrow(),
                    *cap.time()..,
                    settings.first_live_epoch,
                );
                capability = None;
                return;
            }
            let live_epoch =
                epoch_of(crate::now_ms(), settings.epoch_ms).max(settings.first_live_epoch);
            let read = poll_within_bounds(
                &mut reader,
                &settings,
                &positions,
                *cap.time(),
                &mut buffer,
                &metrics,
            );
            if let Some(mismatches) = reader.changed_mismatches() {
                log_stall.note(&planner.guard, mismatches);
            }
            log_stall.give_up_when_due(&planner.guard);
            if !buffer.is_empty() {
                let by_epoch = assign_epochs(
                    &mut reader,
                    &mut positions.borrow_mut(),
                    buffer.drain(..),
                    live_epoch,
                    *cap.time(),
                );
                for (epoch, records) in by_epoch {
                    output
                        .session(&cap.delayed(&epoch))
                        .give_iterator(records.into_iter());
                }
            }
            close_epochs(cap, &reader, &planner, &positions, &settings, live_epoch);
            if read == settings.max_poll_records {
                activator.activate();
            } else {
                // Idle or throttled: look again soon, and at the latest when the epoch turns.
                activator.activate_after(Duration::from_millis(settings.epoch_ms.clamp(1, 20)));
            }
        }
    })
}

/// Reads up to `max_poll_records` into `buffer`, unless the records read but not yet
/// checkpointed are over the pending bounds; returns how many were read. Over the bound a
/// live epoch closes with the clock, so the source may wait; a replayed one closes only once
/// read, so it reads on, but only while nothing it holds waits for others (a slower worker,
/// the sinks) to be checkpointed: what waits for others drains without it.
fn poll_within_bounds(
    reader: &mut PartitionReader,
    settings: &SourceSettings,
    positions: &PositionsByEpoch,
    current_epoch: u64,
    buffer: &mut Vec<SourceRecord>,
    metrics: &Metrics,
) -> usize {
    let (pending, pending_bytes, waits_for_others) = {
        let positions = positions.borrow();
        let (records, bytes) = positions.values().fold((0, 0), |(records, bytes), epoch| {
            (records + epoch.records, bytes + epoch.bytes)
        });
        let waits = positions
            .keys()
            .next()
            .is_some_and(|oldest| *oldest < current_epoch);
        (records, bytes, waits)
    };
    metrics.pending_records.set(pending as i64);
    metrics.pending_bytes.set(pending_bytes as i64);
    let over_bound = settings.over_pending_bound(pending, pending_bytes);
    if let Err(error) = reader.throttle(over_bound) {
        metrics.source_errors.inc();
        tracing::warn!(worker = reader.worker, error = %error, "cannot pause or resume partitions; will retry");
    }
    let replay_reads_on = reader.replaying() && !waits_for_others;
    if over_bound && !replay_reads_on {
        return 0;
    }
    reader.poll(settings.max_poll_records, buffer, metrics)
}

/// Gives each record read its epoch: the one an earlier run planned for it while replaying,
/// else `live_epoch`, never before the source's `current_epoch`; counts it in its epoch's
/// positions. Stops the engine (rather than break exactly-once) if a replayed record's planned
/// epoch has already closed: its rows could then be counted twice.
fn assign_epochs(
    reader: &mut PartitionReader,
    positions: &mut BTreeMap<u64, EpochPositions>,
    records: impl Iterator<Item = SourceRecord>,
    live_epoch: u64,
    current_epoch: u64,
) -> BTreeMap<u64, Vec<SourceRecord>> {
    let mut by_epoch: BTreeMap<u64, Vec<SourceRecord>> = BTreeMap::new();
    for record in records {
        let planned = reader.planned_epoch(record.partition, record.offset);
        if let Some(planned) = planned.filter(|planned| *planned < current_epoch) {
            // Cannot happen while the capability follows the oldest planned epoch.
            stop(
                "replaying the log",
                &ReplayError::PastPlannedEpoch {
                    partition: record.partition,
                    offset: record.offset,
                    planned,
                    current: current_epoch,
                },
            );
        }
        let epoch = planned.unwrap_or(live_epoch).max(current_epoch);
        let entry = positions.entry(epoch).or_default();
        entry.records += 1;
        entry.bytes += record.payload.len();
        let next = entry.next_offsets.entry(record.partition).or_default();
        if record.offset + 1 > *next {
            *next = record.offset + 1;
            entry
                .marks
                .insert(record.partition, fingerprint(&record.payload));
        }
        by_epoch.entry(epoch).or_default().push(record);
    }
    by_epoch
}

/// Moves the capability to the oldest epoch still to be replayed, else to the clock's
/// `live_epoch`, once the partitions are known; the epochs it passes are planned (made
/// durable) first, and the last live one records how far each partition was received.
fn close_epochs(
    cap: &mut Capability<u64>,
    reader: &PartitionReader,
    planner: &Planner,
    positions: &PositionsByEpoch,
    settings: &SourceSettings,
    live_epoch: u64,
) {
    let target = reader
        .earliest_planned_epoch()
        .map_or(live_epoch, |planned| planned.min(live_epoch));
    if target <= *cap.time() || !reader.assignment_known {
        return;
    }
    let closing = *cap.time()..target;
    let mut positions = positions.borrow_mut();
    planner.plan(&positions, closing.clone(), settings.first_live_epoch);
    if closing.end > settings.first_live_epoch {
        positions.entry(closing.end - 1).or_default().received_until = reader.received_until();
    }
    cap.downgrade(&target);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(entries: &[(i32, &[(u64, i64)])]) -> HashMap<i32, VecDeque<(u64, i64)>> {
        entries
            .iter()
            .map(|(partition, plan)| (*partition, plan.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn over_the_bound_a_replay_reads_only_what_its_oldest_epoch_needs() {
        // Partitions 0 and 2 hold epoch 7 open; 1 starts at 8; 3 has no plan (live).
        let plans = plans(&[(0, &[(7, 10), (9, 20)]), (1, &[(8, 5)]), (2, &[(7, 3)])]);
        let owned = || [0, 1, 2, 3].into_iter();
        assert_eq!(
            partitions_to_pause(owned(), &plans, true),
            BTreeSet::from([1, 3])
        );
        assert_eq!(
            partitions_to_pause(owned(), &plans, false),
            BTreeSet::new(),
            "under the bound every partition is read"
        );
        assert_eq!(
            partitions_to_pause(owned(), &HashMap::new(), true),
            BTreeSet::new(),
            "live, over the bound, the source waits instead"
        );
    }

    #[test]
    fn either_pending_bound_holds_the_source_back() {
        let settings = SourceSettings {
            epoch_ms: 500,
            max_poll_records: 10,
            max_pending_records: 100,
            max_pending_bytes: 4096,
            first_live_epoch: 0,
        };
        assert!(!settings.over_pending_bound(99, 4095));
        assert!(settings.over_pending_bound(100, 0), "the records' bound");
        assert!(settings.over_pending_bound(1, 4096), "the bytes' bound");
    }
}
