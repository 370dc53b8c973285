//! Recognising the log a checkpoint describes.
//!
//! Offsets name records only within one log. A broker that lost its log (an in-memory broker
//! restarted, a topic deleted and recreated, retention that deleted records a checkpoint
//! still needs) serves a new log under the same offsets: read on, the engine would give its
//! records the epochs the old log's records had, suppress their writes as replays, and lose
//! them. So every checkpoint stores, per partition, a fingerprint of the last record it
//! covers ([`fingerprint`]), and the engine compares it with the log at start, and whenever
//! the log ends before what an earlier run read, before it reads on.
//!
//! On a mismatch the engine never reads on: it records the stall in `_log_stalls` (what
//! `/api/progress` and the `ClickstreamLogMismatch` alert read), waits
//! `log_loss_timeout_secs` for the log to come back, and exits with
//! [`crate::retry::EXIT_LOG_MISMATCH`] naming the recovery (README: "When the log is lost").

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::clickhouse::ClickHouseWriter;
use crate::clickhouse::io::IoRuntime;
use crate::clickhouse::rows::LogStallRow;
use crate::config::KafkaConfig;
use crate::recovery::Recovery;
use crate::retry::{Chain, EXIT_LOG_MISMATCH};

/// The fingerprint of a record's value: XXH3-64 of its bytes (a record's value carries its
/// `messageId` and its receive time, so two logs' records at one offset differ). Never 0,
/// which marks checkpoints written before fingerprints were kept.
pub fn fingerprint(payload: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(payload).max(1)
}

/// How a partition's log differs from what the checkpoint describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The topic or the partition does not exist any more.
    Missing {
        /// Partition.
        partition: i32,
    },
    /// The log ends before records an earlier run read (`expected_end`, the checkpoint's or
    /// an epoch plan's next offset).
    Shorter {
        /// Partition.
        partition: i32,
        /// Next offset an earlier run read up to.
        expected_end: i64,
        /// The log's end (high watermark).
        log_end: i64,
    },
    /// The log starts after the first record a replay needs (retention deleted it).
    StartsAfterReplay {
        /// Partition.
        partition: i32,
        /// First offset the replay needs.
        replay_from: i64,
        /// The log's first offset (low watermark).
        log_start: i64,
    },
    /// The record at the checkpoint's last offset is another record: a new log has grown
    /// past the old one's offsets.
    OtherRecord {
        /// Partition.
        partition: i32,
        /// The offset compared.
        offset: i64,
    },
}

impl Mismatch {
    /// The partition.
    pub fn partition(&self) -> i32 {
        match self {
            Mismatch::Missing { partition }
            | Mismatch::Shorter { partition, .. }
            | Mismatch::StartsAfterReplay { partition, .. }
            | Mismatch::OtherRecord { partition, .. } => *partition,
        }
    }

    /// Its `_log_stalls` row (`detected_at_ms` Unix ms).
    pub fn row(&self, topic: &str, detected_at_ms: i64) -> LogStallRow {
        let (reason, expected, found) = match *self {
            Mismatch::Missing { .. } => ("partition_missing", -1, -1),
            Mismatch::Shorter {
                expected_end,
                log_end,
                ..
            } => ("log_ends_before_checkpoint", expected_end, log_end),
            Mismatch::StartsAfterReplay {
                replay_from,
                log_start,
                ..
            } => ("log_starts_after_replay", replay_from, log_start),
            Mismatch::OtherRecord { offset, .. } => ("other_record_at_offset", offset, offset),
        };
        LogStallRow {
            topic: topic.to_owned(),
            partition: self.partition(),
            reason: reason.to_owned(),
            expected_offset: expected,
            found_offset: found,
            detected_at_ms,
            resolved: 0,
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Missing { partition } => write!(f, "partition {partition} does not exist"),
            Mismatch::Shorter {
                partition,
                expected_end,
                log_end,
            } => write!(
                f,
                "partition {partition} ends at offset {log_end}, but an earlier run read up to {expected_end}"
            ),
            Mismatch::StartsAfterReplay {
                partition,
                replay_from,
                log_start,
            } => write!(
                f,
                "partition {partition} starts at offset {log_start}, but the replay needs offset {replay_from} on"
            ),
            Mismatch::OtherRecord { partition, offset } => write!(
                f,
                "partition {partition} holds another record at offset {offset} than the checkpoint's"
            ),
        }
    }
}

/// Compares the log with what `recovery` describes, partition by partition: its start (low
/// watermark), and, read back, the furthest record an earlier run read and the record at the
/// checkpoint's last offset (its fingerprint). The log's end is found by reading, not from the
/// high watermark: tansu 0.6 reports high watermarks behind the log's end. Errors are the
/// broker's (unreachable, timed out): the check could not be made, which is not a mismatch.
pub fn check_log(config: &KafkaConfig, recovery: &Recovery) -> Result<Vec<Mismatch>, KafkaError> {
    let probe = LogProbe::new(config)?;
    let existing = probe.partitions()?;
    let mut partitions: Vec<_> = recovery.partitions.iter().collect();
    partitions.sort_by_key(|(partition, _)| **partition);
    let mut mismatches = Vec::new();
    for (&partition, expected) in partitions {
        if expected.expected_end <= 0 {
            continue;
        }
        if !existing.contains(&partition) {
            mismatches.push(Mismatch::Missing { partition });
            continue;
        }
        let (log_start, log_end) = probe.watermarks(partition)?;
        if log_start > expected.replay_from {
            mismatches.push(Mismatch::StartsAfterReplay {
                partition,
                replay_from: expected.replay_from,
                log_start,
            });
            continue;
        }
        // Offsets are read in ascending order: a record queued for the earlier read is then
        // either skipped (below the next offset asked for) or the very record asked for.
        let last_read = expected.expected_end - 1;
        let at_mark = match expected.mark {
            Some((offset, _)) if offset < last_read => Some(probe.record_at(partition, offset)?),
            _ => None,
        };
        let found = probe.record_at(partition, last_read)?;
        if found.is_none() {
            mismatches.push(Mismatch::Shorter {
                partition,
                expected_end: expected.expected_end,
                log_end,
            });
        } else if let Some((offset, mark)) = expected.mark
            && at_mark.unwrap_or(found) != Some(mark)
        {
            mismatches.push(Mismatch::OtherRecord { partition, offset });
        }
    }
    Ok(mismatches)
}

/// Reads single records of the events topic at given offsets, never jumping elsewhere.
pub struct LogProbe {
    consumer: BaseConsumer,
    topic: String,
}

impl std::fmt::Debug for LogProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogProbe")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// How long one broker request of a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl LogProbe {
    /// A probe of `config`'s events topic.
    pub fn new(config: &KafkaConfig) -> Result<LogProbe, KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", "clickstream-engine-log-check")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "true")
            // Every read is a new assignment, twice per partition at each start; with
            // librdkafka's default wait (500 ms) the reads of 12 partitions took 11.3 s of a
            // restart, with 20 ms 0.85 s.
            .set("fetch.wait.max.ms", "20")
            .create()?;
        Ok(LogProbe {
            consumer,
            topic: config.topic.clone(),
        })
    }

    /// The topic's partitions (none when the topic does not exist). Any other metadata error
    /// (a leader being elected, say) is the broker's, not a sign of another log.
    fn partitions(&self) -> Result<Vec<i32>, KafkaError> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), PROBE_TIMEOUT)?;
        let mut partitions = Vec::new();
        for topic in metadata.topics().iter().filter(|t| t.name() == self.topic) {
            match topic.error().map(RDKafkaErrorCode::from) {
                None => partitions.extend(topic.partitions().iter().map(|p| p.id())),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {}
                Some(code) => return Err(KafkaError::MetadataFetch(code)),
            }
        }
        Ok(partitions)
    }

    /// `(low, high)` watermarks; the high one only as the broker reports it.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, PROBE_TIMEOUT)
    }

    /// The fingerprint of the record at `offset`; `None` when the log has no record there
    /// (it ends before it, or it was deleted). A log that goes on past `offset` without a
    /// record at it is another log's offsets (fingerprint 0).
    ///
    /// Read from `offset` first, then from further back: tansu 0.6.0 as released answers a
    /// fetch inside a record batch with the next batch (asked for offset 91 of a batch 87-92,
    /// it serves 93; the test broker is built with the fix, `deploy/tansu/`),
    /// and reports the partition's end behind the log's end, so neither the first record
    /// served nor the end it reports is taken at its word.
    pub fn record_at(&self, partition: i32, offset: i64) -> Result<Option<u64>, KafkaError> {
        let mut starts: Vec<i64> = [0, 64, 4_096, 262_144, offset]
            .iter()
            .map(|back| (offset - back).max(0))
            .collect();
        starts.dedup();
        let mut found = None;
        for start in starts {
            match self.read_from(partition, start, offset)? {
                Read::Record(fingerprint) => return Ok(Some(fingerprint)),
                Read::Past if found.is_none() => found = Some(0),
                Read::EndAfterRecords => return Ok(found),
                Read::Past | Read::Nothing => {}
            }
        }
        Ok(found)
    }

    /// Reads `partition` from `start` until the record at `offset`, a record past it, or
    /// [`END_GRACE`] without a record (the log's end: tansu reports its end behind the log's
    /// and serves nothing, reporting no end, for a fetch inside its last batch, so quiet is
    /// the only sign of an end that holds for both).
    fn read_from(&self, partition: i32, start: i64, offset: i64) -> Result<Read, KafkaError> {
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
        self.consumer.assign(&assignment)?;
        let mut quiet_since = Instant::now();
        let mut records_before = false;
        while quiet_since.elapsed() < END_GRACE {
            match self.consumer.poll(Duration::from_millis(200)) {
                // Records of an earlier assignment may still be queued: only this partition's
                // records from `start` on count.
                Some(Ok(message)) if message.partition() == partition => {
                    let at = message.offset();
                    if at == offset {
                        return Ok(Read::Record(fingerprint(
                            message.payload().unwrap_or_default(),
                        )));
                    } else if at > offset {
                        return Ok(Read::Past);
                    } else if at >= start {
                        records_before = true;
                        quiet_since = Instant::now();
                    }
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    break;
                }
                Some(Ok(_) | Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(error)) => return Err(error),
            }
        }
        Ok(if records_before {
            Read::EndAfterRecords
        } else {
            Read::Nothing
        })
    }
}

/// What one read of [`LogProbe::read_from`] found.
enum Read {
    /// The record asked for.
    Record(u64),
    /// A record past the one asked for, before it.
    Past,
    /// Records before the one asked for, then the log's end.
    EndAfterRecords,
    /// The log's end, or an offset out of range, and no record.
    Nothing,
}

/// How long a record must stay away after the broker reported the partition's end.
const END_GRACE: Duration = Duration::from_secs(3);

/// What the engine tells an operator when it gives up on a log (also in the README).
pub const RECOVERY: &str = "the events log is not the one the checkpoints describe \
(a broker that lost its log, a recreated topic, or retention that deleted records a replay needs). \
Recover per database (README: When the log is lost): either keep the results and resume from \
the new log's start with `engine --accept-new-log` once (sessions open at the cut split there), \
or drop the database and start the engine again to rebuild every table from the new log";

/// Records stalls in `_log_stalls` and the `log_mismatch_partitions` gauge, and gives up
/// after the configured wait.
#[derive(Debug, Clone)]
pub struct LogGuard {
    /// Where stalls are recorded (its topic is the one checked).
    pub writer: ClickHouseWriter,
    /// Retries and metrics.
    pub sink: IoRuntime,
    /// How long a stall may last before the engine exits.
    pub timeout: Duration,
}

impl LogGuard {
    /// Records `mismatches` (once per partition and reason; they are logged each time).
    pub fn record(&self, mismatches: &[Mismatch]) {
        let now = crate::now_ms() as i64;
        let rows: Vec<LogStallRow> = mismatches
            .iter()
            .map(|mismatch| mismatch.row(self.writer.topic(), now))
            .collect();
        for mismatch in mismatches {
            tracing::error!(topic = self.writer.topic(), %mismatch, timeout_secs = self.timeout.as_secs(), "{RECOVERY}; not reading on");
        }
        self.sink
            .write_with_retry("log stall", || self.writer.log_stalls(&rows));
        self.flag(rows.iter().map(|row| row.partition), true);
    }

    /// Ends every stall of the topic still open in `_log_stalls` (the log checked out).
    pub fn resolve_open(&self) {
        let topic = self.writer.topic();
        let open = loop {
            match self.sink.runtime.block_on(self.writer.open_log_stalls()) {
                Ok(open) => break open,
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "cannot read _log_stalls; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        if !open.is_empty() {
            tracing::info!(
                topic,
                partitions = open.len(),
                "the log checks out: stalls resolved"
            );
            self.resolve(open);
        }
    }

    fn flag(&self, partitions: impl Iterator<Item = i32>, mismatched: bool) {
        for partition in partitions {
            self.sink.metrics.flag_log_mismatch(partition, mismatched);
        }
    }

    /// Ends the stalls `rows` recorded.
    pub fn resolve(&self, rows: Vec<LogStallRow>) {
        self.flag(rows.iter().map(|row| row.partition), false);
        let now = crate::now_ms() as i64;
        let rows: Vec<LogStallRow> = rows
            .into_iter()
            .map(|mut row| {
                row.resolved = 1;
                row.detected_at_ms = row.detected_at_ms.max(now) + 1;
                row
            })
            .collect();
        self.sink
            .write_with_retry("log stall resolved", || self.writer.log_stalls(&rows));
    }

    /// Exits with [`EXIT_LOG_MISMATCH`], naming the mismatches and the recovery.
    pub fn give_up(&self, mismatches: &[Mismatch]) -> ! {
        let found: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        tracing::error!(topic = self.writer.topic(), found = ?found, "{RECOVERY}; exiting with status {EXIT_LOG_MISMATCH}");
        eprintln!(
            "engine: topic {}: {}: {RECOVERY}",
            self.writer.topic(),
            found.join("; ")
        );
        std::process::exit(EXIT_LOG_MISMATCH)
    }

    /// `engine --accept-new-log`: the partitions whose log is not the one the checkpoints
    /// describe start afresh from the new log's beginning, keeping every result written so
    /// far (see [`ClickHouseWriter::forget_partitions`]); their stalls are resolved. Returns
    /// the mismatches accepted (none: nothing to do).
    pub fn accept_new_log(
        &self,
        kafka: &KafkaConfig,
        recovery: &Recovery,
    ) -> Result<Vec<Mismatch>, KafkaError> {
        let mismatches = check_log(kafka, recovery)?;
        if !mismatches.is_empty() {
            let partitions: Vec<i32> = mismatches.iter().map(Mismatch::partition).collect();
            for mismatch in &mismatches {
                tracing::warn!(topic = self.writer.topic(), %mismatch, "accepting the new log: this partition starts afresh, results kept");
            }
            self.sink.write_with_retry("accepting the new log", || {
                self.writer.forget_partitions(&partitions)
            });
        }
        self.resolve_open();
        Ok(mismatches)
    }

    /// Before any worker reads: compares the log with `recovery` until it checks out, or
    /// gives up `timeout` after the first mismatch. A broker that cannot be reached is
    /// waited for, as at any start.
    pub fn verify_at_start(&self, kafka: &KafkaConfig, recovery: &Recovery) {
        let mut stalled: Option<(Instant, Vec<Mismatch>)> = None;
        loop {
            match check_log(kafka, recovery) {
                Ok(mismatches) if mismatches.is_empty() => {
                    self.resolve_open();
                    return;
                }
                Ok(mismatches) => {
                    if stalled.as_ref().is_none_or(|(_, seen)| *seen != mismatches) {
                        self.record(&mismatches);
                    }
                    let since = stalled.map_or_else(Instant::now, |(since, _)| since);
                    stalled = Some((since, mismatches));
                }
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "cannot compare the log with the checkpoint yet; retrying");
                }
            }
            if let Some((since, mismatches)) = &stalled
                && (since.elapsed() >= self.timeout || self.sink.shutdown.load(Ordering::Relaxed))
            {
                self.give_up(mismatches);
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_records_apart_and_are_never_zero() {
        assert_ne!(fingerprint(b"a"), fingerprint(b"b"));
        assert_eq!(fingerprint(b"a"), fingerprint(b"a"));
        assert_ne!(fingerprint(b""), 0);
    }

    #[test]
    fn stall_rows_name_the_offsets_compared() {
        let row = Mismatch::Shorter {
            partition: 3,
            expected_end: 40,
            log_end: 4,
        }
        .row("events", 7);
        assert_eq!(
            (
                row.partition,
                row.reason.as_str(),
                row.expected_offset,
                row.found_offset
            ),
            (3, "log_ends_before_checkpoint", 40, 4)
        );
    }
}
