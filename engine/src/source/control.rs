//! The control source: operators' instructions (JSON on the control topic), as a collection of
//! identity links to remove.
//!
//! The topic is small and read whole at every start, so the set of unlinks is rebuilt
//! deterministically and needs no checkpoint. One worker reads it; unmerge and remerge are
//! idempotent (setting an unlink twice, or removing an absent one, changes nothing). A
//! malformed message is logged and skipped: it must not stop the engine, and the topic keeps it
//! for the operator to see.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use differential_dataflow::{AsCollection, VecCollection};
use operators::Unlink;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use schemas::ControlMessage;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::operator::source;

use crate::config::KafkaConfig;
use crate::metrics::Metrics;
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

/// The unlinks collection. `consumer` is `None` on every worker but the one that reads.
pub fn control_source<'s>(
    scope: Scope<'s, u64>,
    consumer: Option<BaseConsumer>,
    epoch_ms: u64,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> VecCollection<'s, u64, Unlink, isize> {
    source(scope, "ControlSource", move |capability, info| {
        let activator = scope.activator_for(info.address);
        let mut capability = consumer.is_some().then_some(capability);
        let mut unlinked: BTreeSet<Unlink> = BTreeSet::new();
        move |output| {
            let (Some(cap), Some(consumer)) = (capability.as_mut(), consumer.as_ref()) else { return };
            if shutdown.load(Ordering::Relaxed) {
                capability = None;
                return;
            }
            let epoch = epoch_of(crate::now_ms(), epoch_ms);
            if epoch > *cap.time() {
                cap.downgrade(&epoch);
            }
            let time = *cap.time();
            let mut session = output.session(&cap);
            while let Some(message) = consumer.poll(Duration::ZERO) {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        metrics.source_errors.inc();
                        tracing::warn!(%error, "control topic poll error; continuing");
                        break;
                    }
                };
                let parsed = message.payload().map(serde_json::from_slice::<ControlMessage>);
                match parsed {
                    Some(Ok(ControlMessage::Unmerge { tenant, anonymous_id, user_id })) => {
                        let link = Unlink::new(&tenant, &anonymous_id, &user_id);
                        tracing::info!(?link, offset = message.offset(), "unmerge");
                        if unlinked.insert(link.clone()) {
                            session.give((link, time, 1isize));
                        }
                    }
                    Some(Ok(ControlMessage::Remerge { tenant, anonymous_id, user_id })) => {
                        let link = Unlink::new(&tenant, &anonymous_id, &user_id);
                        tracing::info!(?link, offset = message.offset(), "remerge");
                        if unlinked.remove(&link) {
                            session.give((link, time, -1isize));
                        }
                    }
                    Some(Err(error)) => tracing::warn!(%error, offset = message.offset(), "malformed control message skipped"),
                    None => tracing::warn!(offset = message.offset(), "empty control message skipped"),
                }
            }
            drop(session);
            activator.activate_after(Duration::from_millis(epoch_ms.clamp(10, 250)));
        }
    })
    .as_collection()
}
