//! The control source: operators' instructions (JSON on the control topic), as a collection of
//! identity links to remove and a stream of erasures, suppression lifts and tenant removals.
//!
//! The topic is small and read whole at every start, so the set of unlinks is rebuilt
//! deterministically and needs no checkpoint. One worker reads it; unmerge and remerge are
//! idempotent (setting an unlink twice, or removing an absent one, changes nothing), and so is
//! every erasure record ([`schemas::erasure::ErasureLog`] is a set). Each process also reads
//! the erasures whole before its workers start ([`read_erasures`]), so that no replayed event
//! of an erased person enters the dataflow. A malformed message is logged and skipped: it must
//! not stop the engine, and the topic keeps it for the operator to see.

use std::collections::BTreeSet;
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

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
use crate::sink::erasure::Requests;
use crate::source::kafka::epoch_of;

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
/// again can retract them. The control source applies it at the first live epoch, after the
/// replay rebuilt the state (see [`control_source`]).
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
    Ok(StartErasures { log, erasures })
}

/// What [`read_erasures`] found.
#[derive(Debug)]
pub struct StartErasures {
    /// The completed requests and every lift.
    pub log: ErasureLog,
    /// Person erasures on the topic, completed or not (they need the salt).
    pub erasures: usize,
}

/// Where and when the control source reads.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The first epoch this run does not replay: nothing is emitted before it.
    pub first_live_epoch: u64,
    /// Length of an epoch, ms.
    pub epoch_ms: u64,
}

/// What the control source emits: a change of an unlink, or an erasure record.
#[derive(Debug, Clone)]
enum Control {
    Unlink(Unlink, u64, isize),
    Erasure(ControlRecord),
}

/// The unlinks collection and the erasure records. `consumer` is `None` on every worker but
/// the one that reads; that worker also hands each erasure and removal, with the epoch it is
/// applied at, to the executor through `requests`. Nothing is emitted before `first_live_epoch`:
/// the replay rebuilds the state as it was, and a request left pending by a crash is then
/// applied to it like a new one.
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
    let ControlSettings {
        first_live_epoch,
        epoch_ms,
    } = settings;
    let (unlinks, erasures) =
        source::<_, Builder, _, _>(scope, "ControlSource", move |capability, info| {
            let activator = scope.activator_for(info.address);
            let mut capability = consumer.is_some().then_some(capability);
            if let Some(cap) = capability.as_mut() {
                cap.downgrade(&first_live_epoch);
            }
            let mut unlinked: BTreeSet<Unlink> = BTreeSet::new();
            move |output| {
                let (Some(cap), Some(consumer)) = (capability.as_mut(), consumer.as_ref()) else {
                    return;
                };
                if shutdown.load(Ordering::Relaxed) {
                    capability = None;
                    return;
                }
                // The frontier moves with the clock. Asking the broker for the topic's end here,
                // to move it only once everything written before now was read, blocked the worker
                // (and every epoch with it) for a round trip per activation: `bench latency` went
                // from 0.5 s to 7 s. A record read a little late is still safe: lifts take effect
                // 30 s after they are written, and an erasure read late withdraws what its epoch
                // let in.
                let epoch = epoch_of(crate::now_ms(), epoch_ms);
                if epoch > *cap.time() {
                    cap.downgrade(&epoch);
                }
                let time = *cap.time();
                let read = read_new(consumer, time, &mut unlinked, &requests, &metrics);
                output.session(&cap).give_iterator(read.into_iter());
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

/// The control records written since the last call, as updates at `time`: unlinks netted
/// against `unlinked` (an unmerge of a link already unmerged is nothing), erasures and
/// removals also handed to the executor through `requests`.
fn read_new(
    consumer: &BaseConsumer,
    time: u64,
    unlinked: &mut BTreeSet<Unlink>,
    requests: &Requests,
    metrics: &Metrics,
) -> Vec<Control> {
    let mut read = Vec::new();
    while let Some(message) = consumer.poll(Duration::ZERO) {
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                metrics.source_errors.inc();
                tracing::warn!(%error, "control topic poll error; continuing");
                break;
            }
        };
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
                tracing::info!(?link, offset = message.offset(), "unmerge");
                if unlinked.insert(link.clone()) {
                    read.push(Control::Unlink(link, time, 1));
                }
            }
            Some(Ok(ControlMessage::Remerge {
                tenant,
                anonymous_id,
                user_id,
            })) => {
                let link = Unlink::new(&tenant, &anonymous_id, &user_id);
                tracing::info!(?link, offset = message.offset(), "remerge");
                if unlinked.remove(&link) {
                    read.push(Control::Unlink(link, time, -1));
                }
            }
            Some(Ok(recount @ ControlMessage::RecountRollups { .. })) => {
                // The executor's own duty: nothing for the operators.
                requests.applied(&recount, time);
            }
            Some(Ok(erasure)) => {
                tracing::info!(offset = message.offset(), epoch = time, "erasure record");
                requests.applied(&erasure, time);
                read.push(Control::Erasure(ControlRecord(erasure)));
            }
            Some(Err(error)) => {
                tracing::warn!(%error, offset = message.offset(), "malformed control message skipped")
            }
            None => tracing::warn!(offset = message.offset(), "empty control message skipped"),
        }
    }
    read
}
