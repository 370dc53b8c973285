//! Every metric of the ingest gateway.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of the request counter: bounded (routes and status codes are finite sets).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `track`, `batch`, ...
    pub route: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of the refused-event counter: the first field that made the event unusable (a
/// bounded set: the gateway's own field names).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `event`, `anonymousId`, `type`, ...; empty when the event was not a readable object.
    pub field: String,
}

/// Labels of the ignored-field counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IgnoredLabels {
    /// `ingestion_warnings.type`: `invalid_time_ignored`, `invalid_ip_ignored`, ...
    pub kind: &'static str,
}

/// The gateway's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    /// The registry rendered at `/metrics`.
    pub registry: Registry,
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Events acknowledged by Kafka.
    pub events_accepted: Counter,
    /// Events of requests refused whole with a 4xx (a body that is not a batch, a refused
    /// single event, a bad key, over the limits or the quota).
    pub events_rejected: Counter,
    /// Events refused one by one (the rest of their request was accepted, or it was a single
    /// event), by field.
    pub events_refused: Family<RefusalLabels, Counter>,
    /// Fields done without in accepted events, by kind.
    pub fields_ignored: Family<IgnoredLabels, Counter>,
    /// Warnings (refusals, ignored fields) that could not be written to Kafka.
    pub warnings_lost: Counter,
    /// Requests answered 503 because Kafka did not acknowledge.
    pub produce_failures: Counter,
    /// Time from enqueue to Kafka acknowledgement of a request's events.
    pub produce_duration: Histogram,
    /// Events refused because their tenant was over its quota (429).
    pub rate_limited_events: Counter,
    /// Rate-limit decisions taken by a local bucket because Redis did not answer in time.
    pub ratelimit_fallbacks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let events_accepted = Counter::default();
        let events_rejected = Counter::default();
        let produce_failures = Counter::default();
        let events_refused = Family::<RefusalLabels, Counter>::default();
        let fields_ignored = Family::<IgnoredLabels, Counter>::default();
        let warnings_lost = Counter::default();
        registry.register(
            "clickstream_ingest_events_refused",
            "Events refused one by one, by the first field that made them unusable",
            events_refused.clone(),
        );
        registry.register(
            "clickstream_ingest_fields_ignored",
            "Fields of accepted events that could not be read and were done without",
            fields_ignored.clone(),
        );
        registry.register(
            "clickstream_ingest_warnings_lost",
            "Ingestion warnings that could not be written to Kafka",
            warnings_lost.clone(),
        );
        let produce_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let rate_limited_events = Counter::default();
        let ratelimit_fallbacks = Counter::default();
        registry.register(
            "clickstream_ingest_rate_limited_events",
            "Events refused with 429 because their tenant was over its quota",
            rate_limited_events.clone(),
        );
        registry.register(
            "clickstream_ingest_ratelimit_fallbacks",
            "Rate-limit decisions taken locally because Redis did not answer in time",
            ratelimit_fallbacks.clone(),
        );
        registry.register(
            "clickstream_ingest_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "clickstream_ingest_events_accepted",
            "Events acknowledged by Kafka",
            events_accepted.clone(),
        );
        registry.register(
            "clickstream_ingest_events_rejected",
            "Events refused with a 4xx",
            events_rejected.clone(),
        );
        registry.register(
            "clickstream_ingest_produce_failures",
            "Requests answered 503 because Kafka did not acknowledge",
            produce_failures.clone(),
        );
        registry.register_with_unit(
            "clickstream_ingest_produce_duration",
            "Time until Kafka acknowledged all events of a request",
            Unit::Seconds,
            produce_duration.clone(),
        );
        Metrics {
            registry,
            requests,
            events_accepted,
            events_rejected,
            events_refused,
            fields_ignored,
            warnings_lost,
            produce_failures,
            produce_duration,
            rate_limited_events,
            ratelimit_fallbacks,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
