//! The durable hand-off: an idempotent Kafka producer with `acks=all`.
//!
//! A request is answered 200 only after the broker acknowledged every one of its events, so an
//! acknowledged event survives a gateway crash. Anything else (queue full, broker down,
//! timeout) is reported to the caller, who answers 503 and lets the client retry.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemas::{Event, IngestWarning};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Topic that receives events.
    pub topic: String,
    /// How long an event may wait for acknowledgement before the request fails (503).
    pub message_timeout_ms: u64,
    /// Local queue bound: beyond it requests fail fast (503) instead of buffering unboundedly.
    pub queue_max_messages: u32,
    /// How long the producer waits to fill a batch before sending it, ms (librdkafka's
    /// `linger.ms`): longer means fewer, larger produce requests for the broker, and that
    /// much more acknowledgement time per request.
    pub linger_ms: u64,
}

/// Why events were not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The local queue is full: the broker cannot keep up or is unreachable.
    #[error("producer queue is full")]
    QueueFull,
    /// The broker refused or did not acknowledge an event in time.
    #[error("event not acknowledged")]
    NotAcknowledged(#[source] KafkaError),
    /// The producer shut down before delivery was reported.
    #[error("delivery report lost")]
    Canceled,
}

/// Sends events to the events topic.
pub struct EventProducer {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EventProducer {
    /// Creates the producer; connecting happens lazily in the background.
    pub fn new(config: &KafkaConfig) -> Result<EventProducer, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .set(
                "queue.buffering.max.messages",
                config.queue_max_messages.to_string(),
            )
            .set("linger.ms", config.linger_ms.to_string())
            .create()?;
        Ok(EventProducer {
            producer,
            topic: config.topic.clone(),
        })
    }

    /// Enqueues every event and warning, then waits until the broker acknowledged all of
    /// them. Events are keyed by visitor (one visitor's events stay in order on one
    /// partition), warnings by message id.
    pub async fn send_all(
        &self,
        events: &[Event],
        warnings: &[IngestWarning],
    ) -> Result<(), ProduceError> {
        let records = events
            .iter()
            .map(|event| (event.partition_key(), schemas::wire::encode(event)))
            .chain(warnings.iter().map(|warning| {
                let key = format!("{}:{}", warning.tenant, warning.message_id);
                (key, schemas::wire::encode_warning(warning))
            }));
        let mut deliveries = Vec::with_capacity(events.len() + warnings.len());
        for (key, payload) in records {
            let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    return Err(ProduceError::QueueFull);
                }
                Err((error, _)) => return Err(ProduceError::NotAcknowledged(error)),
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(ProduceError::NotAcknowledged(error)),
                Err(_) => return Err(ProduceError::Canceled),
            }
        }
        Ok(())
    }

    /// Whether the broker answers a metadata request for the topic within `timeout`.
    /// Blocking: call from a blocking context.
    pub fn check_reachable(&self, timeout: Duration) -> Result<(), KafkaError> {
        let metadata = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)?;
        match metadata.topics().first() {
            Some(topic) if topic.error().is_none() && !topic.partitions().is_empty() => Ok(()),
            _ => Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )),
        }
    }

    /// Waits for in-flight events at shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
