//! The control source: operators' instructions (JSON on the control topic), as a collection of
//! identity links to remove and a stream of erasures, suppression lifts and tenant removals.
//!
//! The topic is small and read whole at every start, each record replayed in the epoch an
//! earlier run applied it in (its plan), so the set of unlinks is rebuilt deterministically
//! and needs no checkpoint. One worker reads it; unmerge and remerge are
//! idempotent (setting an unlink twice, or removing an absent one, changes nothing), and so is
//! every erasure record ([`schemas::erasure::ErasureLog`] is a set). Each process also reads
//! the erasures whole before its workers start ([`read_erasures`]), so that no replayed event
//! of an erased person enters the dataflow. A malformed message is logged and skipped: it must
//! not stop the engine, and the topic keeps it for the operator to see.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use differential_dataflow::{AsCollection, VecCollection};
use operators::{ControlRecord, Unlink};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::ControlMessage;
use schemas::erasure::ErasureLog;
use timely::dataflow::operators::OkErr;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use crate::clickhouse::ClickHouseWriter;
use crate::clickhouse::io::IoRuntime;
use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::recovery::planned_epoch;
use crate::retry::stop;
use crate::sink::erasure::Requests;
use crate::source::kafka::{ReplayError, epoch_of};

/// A consumer of the whole control topic, from its beginning.
pub fn control_consumer(config: &KafkaConfig) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", "clickstream-engine-control")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&config.control_topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The completed erasures and removals (`completed` holds their request ids) and every lift on
/// the control topic up to its end as of now, read before the workers start; `salt` hashes
/// the events' ids (the query gateway's).
///
/// A request not completed is left out: its rows may hold the person's counts that a crash
/// kept the dataflow from correcting, and only a dataflow that holds the person's events
/// again can retract them. The control source applies it in the epoch the crashed run did,
/// or, if no run did, in the first live epoch (see [`control_source`]).
///
/// A completed request is in: the replay then never holds the person, unlike the run that
/// applied it before epoch `E`. That is safe because completion waits until every sink has
/// written `E`, and from `E` on both runs hold the same state (a withdrawal leaves what never
/// having had the person leaves), so each key's last row, whichever run wrote it, is right.
pub fn read_erasures(
    config: &KafkaConfig,
    salt: &str,
    completed: &std::collections::HashSet<String>,
) -> Result<StartErasures, KafkaError> {
    let consumer = control_consumer(config)?;
    let (low, high) =
        consumer.fetch_watermarks(&config.control_topic, 0, Duration::from_secs(30))?;
    let mut log = ErasureLog::new(salt);
    let mut erasures = 0;
    let mut next = low;
    while next < high {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(message)) => {
                next = message.offset() + 1;
                if let Some(Ok(control)) = message
                    .payload()
                    .map(serde_json::from_slice::<ControlMessage>)
                {
                    erasures += usize::from(matches!(control, ControlMessage::Erase { .. }));
                    let pending = crate::sink::erasure::Request::of(&control)
                        .is_some_and(|request| !completed.contains(&request.id));
                    if !pending {
                        log.apply(&control);
                    }
                }
            }
            Some(Err(error)) => return Err(error),
            None => return Err(KafkaError::NoMessageReceived),
        }
    }
    Ok(StartErasures {
        log,
        erasures,
        start_offset: low,
        end_offset: high,
    })
}

/// What [`read_erasures`] found.
#[derive(Debug)]
pub struct StartErasures {
    /// The completed requests and every lift.
    pub log: ErasureLog,
    /// Person erasures on the topic, completed or not (they need the salt).
    pub erasures: usize,
    /// The topic's first offset when it was read.
    pub start_offset: i64,
    /// The topic's end offset when it was read.
    pub end_offset: i64,
}

/// Where and when the control source reads, and where it records its epochs.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The first epoch that may receive records read for the first time (after every epoch
    /// an earlier run planned, events' or control records').
    pub first_live_epoch: u64,
    /// Length of an epoch, ms.
    pub epoch_ms: u64,
    /// The epochs an earlier run applied the topic's records in
    /// ([`crate::recovery::Recovery::control_plan`]).
    pub plan: VecDeque<(u64, i64)>,
    /// Writes the plan of each epoch that applies records read for the first time, before
    /// the frontier passes it (the writer's topic is the control topic).
    pub planner: ClickHouseWriter,
    /// Retries of those writes.
    pub sink: IoRuntime,
}

/// What the control source emits: a change of an unlink, or an erasure record.
#[derive(Debug, Clone)]
enum Control {
    Unlink(Unlink, u64, isize),
    Erasure(ControlRecord),
}

/// The unlinks collection and the erasure records. `consumer` is `None` on every worker but
/// the one that reads; that worker also hands each erasure and removal, with the epoch it is
/// applied at, to the executor through `requests`.
///
/// Records are applied in epochs as events are: one that an earlier run applied goes to the
/// same epoch again (its plan), whether the replay only rebuilds state there or writes;
/// others go to the current wall-clock epoch, whose plan is made durable before the frontier
/// passes it. So a request left pending by a crash is applied where the crashed run applied
/// it, and the restart rewrites exactly what that run wrote.
pub fn control_source<'s>(
    scope: Scope<'s, u64>,
    consumer: Option<BaseConsumer>,
    settings: ControlSettings,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    requests: Requests,
) -> (
    VecCollection<'s, u64, Unlink, isize>,
    StreamVec<'s, u64, ControlRecord>,
) {
    type Builder = timely::container::CapacityContainerBuilder<Vec<Control>>;
    let epoch_ms = settings.epoch_ms;
    let (unlinks, erasures) =
        source::<_, Builder, _, _>(scope, "ControlSource", move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut epochs = ControlEpochs::new(settings);
            let mut capability = consumer.is_some().then_some(capability);
            if let Some(cap) = capability.as_mut() {
                cap.downgrade(&epochs.first());
            }
            let mut unlinked: BTreeSet<Unlink> = BTreeSet::new();
            move |output| {
                let (Some(cap), Some(consumer)) = (capability.as_mut(), consumer.as_ref()) else {
                    return;
                };
                if shutdown.load(Ordering::Relaxed) {
                    // The open epochs are finished and written on the way out: plan them
                    // first, or a restart would apply their records elsewhere.
                    epochs.plan_before(u64::MAX);
                    capability = None;
                    return;
                }
                // Live records go to the clock's epoch. Asking the broker for the topic's end
                // here, to move the frontier only once everything written before now was read,
                // blocked the worker (and every epoch with it) for a round trip per activation:
                // `bench latency` went from 0.5 s to 7 s. A record read a little late is still
                // safe: lifts take effect 30 s after they are written, and an erasure read late
                // withdraws what its epoch let in.
                let live = epochs.live(crate::now_ms());
                let (read, position) = read_new(consumer, &mut unlinked, &metrics);
                for (offset, control) in read {
                    let epoch = epochs.epoch_of(offset, live, *cap.time());
                    let control = match control {
                        Read::Unlink(link, diff) => Control::Unlink(link, epoch, diff),
                        Read::Erasure(message) => {
                            tracing::info!(offset, epoch, "erasure record");
                            requests.applied(&message, epoch);
                            if matches!(message, ControlMessage::RecountRollups { .. }) {
                                // The executor's own duty: nothing for the operators.
                                continue;
                            }
                            Control::Erasure(ControlRecord(message))
                        }
                    };
                    output.session(&cap.delayed(&epoch)).give(control);
                }
                if let Some(position) = position {
                    epochs.read_through(position);
                }
                let target = epochs.next_frontier(live);
                if target > *cap.time() {
                    epochs.plan_before(target);
                    cap.downgrade(&target);
                }
                // Wake at the epoch's end (the erase operator holds each epoch of events until
                // this frontier passes it: waking on a fixed period instead cost up to that period
                // of latency per epoch), and at least every 250 ms to read new records.
                let to_next_epoch = epoch_ms - crate::now_ms() % epoch_ms;
                activator.activate_after(Duration::from_millis(to_next_epoch.clamp(1, 250)));
            }
        })
        .ok_err(|control| match control {
            Control::Unlink(link, time, diff) => Ok((link, time, diff)),
            Control::Erasure(message) => Err(message),
        });
    (unlinks.as_collection(), erasures)
}

/// Which epoch each control record goes to, and the plans of the epochs that apply records
/// read for the first time.
struct ControlEpochs {
    settings: ControlSettings,
    /// Epochs that applied records read for the first time, and where they end.
    unplanned: BTreeMap<u64, i64>,
}

impl ControlEpochs {
    fn new(settings: ControlSettings) -> ControlEpochs {
        ControlEpochs {
            settings,
            unplanned: BTreeMap::new(),
        }
    }

    /// Where the capability starts: the oldest planned epoch, else the first live one.
    fn first(&self) -> u64 {
        let settings = &self.settings;
        settings
            .plan
            .front()
            .map_or(settings.first_live_epoch, |&(epoch, _)| epoch)
    }

    /// The epoch of records read for the first time at `now_ms` (Unix ms).
    fn live(&self, now_ms: u64) -> u64 {
        epoch_of(now_ms, self.settings.epoch_ms).max(self.settings.first_live_epoch)
    }

    /// The epoch of the record at `offset` (records come in offset order), the capability
    /// being at `current`: its planned epoch, else `live`.
    fn epoch_of(&mut self, offset: i64, live: u64, current: u64) -> u64 {
        match planned_epoch(&mut self.settings.plan, offset) {
            Some(planned) if planned < current => {
                // Cannot happen while the capability follows the plan; if it did, the record
                // would change other epochs than the crashed run's: stop, as the Kafka source
                // does, rather than break exactly-once.
                let error = ReplayError::PastPlannedEpoch {
                    partition: 0,
                    offset,
                    planned,
                    current,
                };
                stop("replaying the control topic", &error)
            }
            Some(planned) => planned,
            None => {
                let epoch = live.max(current);
                self.unplanned.insert(epoch, offset + 1);
                epoch
            }
        }
    }

    /// Notes that the consumer has read every record before `next_offset`: planned epochs
    /// whose records end there are done, even when their last records were skipped (malformed,
    /// or an unlink netted away) and never asked for by [`ControlEpochs::epoch_of`].
    fn read_through(&mut self, next_offset: i64) {
        let plan = &mut self.settings.plan;
        while plan.front().is_some_and(|&(_, next)| next <= next_offset) {
            plan.pop_front();
        }
    }

    /// How far the capability may move: to the oldest epoch still to replay, else `live`.
    fn next_frontier(&self, live: u64) -> u64 {
        let plan = &self.settings.plan;
        plan.front().map_or(live, |&(epoch, _)| epoch.min(live))
    }

    /// Makes the plans of the epochs before `target` durable (retrying until they are):
    /// the frontier passes them next, and a sink may then write them.
    fn plan_before(&mut self, target: u64) {
        let later = self.unplanned.split_off(&target);
        for (epoch, next_offset) in std::mem::replace(&mut self.unplanned, later) {
            let offsets = BTreeMap::from([(0, next_offset)]);
            let ControlSettings { planner, sink, .. } = &self.settings;
            sink.write_with_retry("control epoch plan", || planner.plan_epoch(epoch, &offsets));
        }
    }
}

/// A record as read, before it is given its epoch.
enum Read {
    Unlink(Unlink, isize),
    Erasure(ControlMessage),
}

/// The control records written since the last call, with their offsets: unlinks netted
/// against `unlinked` (an unmerge of a link already unmerged is nothing), and erasures,
/// removals, lifts and recounts as they are; and the offset after the last record read
/// (skipped ones included), `None` when none was.
fn read_new(
    consumer: &BaseConsumer,
    unlinked: &mut BTreeSet<Unlink>,
    metrics: &Metrics,
) -> (Vec<(i64, Read)>, Option<i64>) {
    let mut read = Vec::new();
    let mut position = None;
    while let Some(message) = consumer.poll(Duration::ZERO) {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                metrics.source_errors.inc();
                tracing::warn!(%error, "control topic poll error; continuing");
                break;
            }
        };
        let offset = message.offset();
        position = Some(offset + 1);
        let parsed = message
            .payload()
            .map(serde_json::from_slice::<ControlMessage>);
        match parsed {
            Some(Ok(ControlMessage::Unmerge {
                tenant,
                anonymous_id,
                user_id,
            })) => {
                let link = Unlink::new(&tenant, &anonymous_id, &user_id);
                tracing::info!(?link, offset, "unmerge");
                if unlinked.insert(link.clone()) {
                    read.push((offset, Read::Unlink(link, 1)));
                }
            }
            Some(Ok(ControlMessage::Remerge {
                tenant,
                anonymous_id,
                user_id,
            })) => {
                let link = Unlink::new(&tenant, &anonymous_id, &user_id);
                tracing::info!(?link, offset, "remerge");
                if unlinked.remove(&link) {
                    read.push((offset, Read::Unlink(link, -1)));
                }
            }
            Some(Ok(message)) => read.push((offset, Read::Erasure(message))),
            Some(Err(error)) => {
                tracing::warn!(%error, offset, "malformed control message skipped")
            }
            None => tracing::warn!(offset, "empty control message skipped"),
        }
    }
    (read, position)
}
