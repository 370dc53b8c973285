//! Every metric of the engine. One instance per process, shared by its worker threads
//! (prometheus-client metrics are atomics); updated per batch, never per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The engine's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Kafka records read.
    pub records_consumed: Counter,
    /// Records that could not be decoded (stored in `_dead_letters`).
    pub dead_letters: Counter,
    /// Rows inserted into `events`.
    pub events_written: Counter,
    /// Failed ClickHouse write attempts (each retried).
    pub sink_failures: Counter,
    /// Duration of one epoch batch write, checkpoint included.
    pub sink_write_duration: Histogram,
    /// Checkpoints committed (one per written batch).
    pub checkpoints: Counter,
    /// Errors reported while polling Kafka.
    pub source_errors: Counter,
    /// Records held for epochs not yet checkpointed.
    pub pending_records: Gauge,
    /// Their payloads' bytes as read from the log.
    pub pending_bytes: Gauge,
    /// Events later than the lateness horizon (stored, not applied to state).
    pub late_events: Counter,
    /// Stored events whose session or person a later epoch changed.
    pub event_corrections: Counter,
    /// Live-counter updates dropped because Redis could not keep up (the queue was full).
    pub live_updates_dropped: Counter,
    /// Rows that retention deleted with mutations (servers without TTL; TTL deletes are the
    /// server's own and not counted here).
    pub retention_deleted_rows: Counter,
    /// Retention passes that failed (each is retried at the next interval).
    pub retention_failures: Counter,
    /// Events dropped because an erasure, a suppression or a tenant's removal covers them.
    pub events_erased: Counter,
    /// Erasure and tenant-removal requests carried out (process 0).
    pub erasures_completed: Counter,
    /// Attempts to carry out a request that failed (each is retried).
    pub erasure_failures: Counter,
    /// Requests applied by the dataflow and not yet completed (process 0).
    pub erasures_pending: Gauge,
    /// Age of the oldest pending request, seconds; 0 when none is pending. The alert
    /// `ErasurePastDeadline` fires on this.
    pub erasure_oldest_pending_seconds: Gauge,
    /// Live state entries by kind and worker: must stay bounded under a steady stream.
    pub state_entries: Family<StateLabels, Gauge>,
    /// Identity claims refused, by reason and by the Segment field that held the id.
    pub claims_refused: Family<RefusalLabels, Counter>,
    /// Per partition this process reads: the log end (high watermark) minus the position,
    /// from librdkafka's statistics. Negative when the log ends before the position: a log
    /// that lost records (see [`crate::source::log_check`]).
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Per worker: the value bytes of the records librdkafka has fetched ahead of the worker
    /// and queued (its statistics' `fetchq_size`; keys, headers and the fetch responses
    /// they live in are not counted), outside the engine's pending bounds; librdkafka stops
    /// fetching at `kafka.max_fetch_queue_bytes`.
    pub fetch_queue_bytes: Family<WorkerLabels, Gauge>,
    /// What each allocator holds, read at each scrape (see [`crate::allocator::heap_bytes`]).
    heap_bytes: Family<HeapLabels, Gauge>,
    /// Partitions of this process whose log is not the one the checkpoints describe, while
    /// the engine waits before it exits (see [`crate::source::log_check`]); exported from the
    /// start, at 0.
    log_mismatch_partitions: Gauge,
    /// Which partitions are counted in `log_mismatch_partitions` (not exported).
    log_mismatch: Family<PartitionLabels, Gauge>,
    /// Seconds since this process last committed a checkpoint (since start, before the first).
    checkpoint_age: Gauge<f64, AtomicU64>,
    /// Seconds between now and "complete up to", on the process that writes `_progress`.
    complete_until_lag: Gauge<f64, AtomicU64>,
    last_checkpoint_ms: AtomicI64,
    complete_until_ms: AtomicI64,
}

/// Labels of the consumer lag: a topic has a bounded number of partitions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Kafka partition.
    pub partition: i32,
}

/// Labels of a per-worker gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// Worker index.
    pub worker: u32,
}

/// Labels of the heap gauges: both sets are small and fixed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeapLabels {
    /// `mimalloc` (Rust's allocations) or `libc` (librdkafka's).
    pub allocator: &'static str,
    /// `committed` or, in a `live-heap` build, `live` (mimalloc); `in_use` or `free` (libc).
    pub kind: &'static str,
}

/// Labels of refused identity claims: both sets are small and fixed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Why: `placeholder_id`.
    pub reason: &'static str,
    /// `userId`, `anonymousId` or `previousId`.
    pub field: &'static str,
}

/// Labels of the state gauges: both sets are small and fixed.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The gauge's name in [`operators::StateGauges::all`].
    pub kind: &'static str,
    /// Worker index.
    pub worker: u32,
}

impl Metrics {
    /// Flags (`true`) or clears the log mismatch of `partition`; the exported gauge counts the
    /// flagged partitions of the process, whichever worker flags them.
    pub fn flag_log_mismatch(&self, partition: i32, mismatched: bool) {
        let value = i64::from(mismatched);
        let before = self
            .log_mismatch
            .get_or_create(&PartitionLabels { partition })
            .set(value);
        self.log_mismatch_partitions.inc_by(value - before);
    }

    /// Publishes one worker's state gauges.
    pub fn record_state(&self, worker: usize, gauges: &operators::StateGauges) {
        let worker = worker as u32;
        for (kind, gauge) in gauges.all() {
            self.state_entries
                .get_or_create(&StateLabels { kind, worker })
                .set(gauge.get() as i64);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics {
            records_consumed: Counter::default(),
            dead_letters: Counter::default(),
            events_written: Counter::default(),
            sink_failures: Counter::default(),
            sink_write_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            checkpoints: Counter::default(),
            source_errors: Counter::default(),
            pending_records: Gauge::default(),
            pending_bytes: Gauge::default(),
            late_events: Counter::default(),
            event_corrections: Counter::default(),
            live_updates_dropped: Counter::default(),
            retention_deleted_rows: Counter::default(),
            retention_failures: Counter::default(),
            events_erased: Counter::default(),
            erasures_completed: Counter::default(),
            erasure_failures: Counter::default(),
            erasures_pending: Gauge::default(),
            erasure_oldest_pending_seconds: Gauge::default(),
            state_entries: Family::default(),
            claims_refused: Family::default(),
            consumer_lag: Family::default(),
            fetch_queue_bytes: Family::default(),
            heap_bytes: Family::default(),
            log_mismatch_partitions: Gauge::default(),
            log_mismatch: Family::default(),
            checkpoint_age: Gauge::default(),
            complete_until_lag: Gauge::default(),
            last_checkpoint_ms: AtomicI64::new(crate::now_ms() as i64),
            complete_until_ms: AtomicI64::new(0),
            registry: Registry::default(),
        };
        // Present from the start at zero, so that a rate over them is defined.
        for field in operators::IdField::ALL {
            let _zero = metrics.claims_refused.get_or_create(&RefusalLabels {
                reason: "placeholder_id",
                field: field.as_str(),
            });
        }
        registry.register(
            "clickstream_engine_records_consumed",
            "Kafka records read",
            metrics.records_consumed.clone(),
        );
        registry.register(
            "clickstream_engine_dead_letters",
            "Records that could not be decoded",
            metrics.dead_letters.clone(),
        );
        registry.register(
            "clickstream_engine_events_written",
            "Rows inserted into the events table",
            metrics.events_written.clone(),
        );
        registry.register(
            "clickstream_engine_sink_failures",
            "Failed ClickHouse batch writes (retried)",
            metrics.sink_failures.clone(),
        );
        registry.register_with_unit(
            "clickstream_engine_sink_write_duration",
            "Time to write one batch of epochs and its checkpoint",
            Unit::Seconds,
            metrics.sink_write_duration.clone(),
        );
        registry.register(
            "clickstream_engine_checkpoints",
            "Checkpoints committed",
            metrics.checkpoints.clone(),
        );
        registry.register(
            "clickstream_engine_source_errors",
            "Errors while polling Kafka",
            metrics.source_errors.clone(),
        );
        registry.register(
            "clickstream_engine_pending_records",
            "Records held for epochs not yet written",
            metrics.pending_records.clone(),
        );
        registry.register(
            "clickstream_engine_pending_bytes",
            "Payload bytes (as read from the log) of the records held for epochs not yet written",
            metrics.pending_bytes.clone(),
        );
        registry.register(
            "clickstream_engine_log_mismatch_partitions",
            "Partitions whose log is not the one the checkpoints describe (the engine stalls, then exits with status 4)",
            metrics.log_mismatch_partitions.clone(),
        );
        registry.register(
            "clickstream_engine_late_events",
            "Events later than the lateness horizon (stored, not applied to state)",
            metrics.late_events.clone(),
        );
        registry.register(
            "clickstream_engine_event_corrections",
            "Stored events rewritten with a new session or person (late events, identity merges)",
            metrics.event_corrections.clone(),
        );
        registry.register(
            "clickstream_engine_live_updates_dropped",
            "Live-counter updates dropped because Redis could not keep up",
            metrics.live_updates_dropped.clone(),
        );
        registry.register(
            "clickstream_engine_retention_deleted_rows",
            "Rows deleted by retention mutations (servers without TTL)",
            metrics.retention_deleted_rows.clone(),
        );
        registry.register(
            "clickstream_engine_retention_failures",
            "Retention passes that failed (retried at the next interval)",
            metrics.retention_failures.clone(),
        );
        registry.register(
            "clickstream_engine_events_erased",
            "Events dropped because an erasure, a suppression or a tenant's removal covers them",
            metrics.events_erased.clone(),
        );
        registry.register(
            "clickstream_engine_erasures_completed",
            "Erasure and tenant-removal requests carried out",
            metrics.erasures_completed.clone(),
        );
        registry.register(
            "clickstream_engine_erasure_failures",
            "Attempts to carry out an erasure that failed (retried)",
            metrics.erasure_failures.clone(),
        );
        registry.register(
            "clickstream_engine_erasures_pending",
            "Erasure and tenant-removal requests not yet completed",
            metrics.erasures_pending.clone(),
        );
        registry.register_with_unit(
            "clickstream_engine_erasure_oldest_pending",
            "Age of the oldest pending erasure request (0 when none)",
            Unit::Seconds,
            metrics.erasure_oldest_pending_seconds.clone(),
        );
        registry.register(
            "clickstream_engine_identity_claims_refused",
            "Identity claims refused (a placeholder id such as \"undefined\" links nothing)",
            metrics.claims_refused.clone(),
        );
        registry.register(
            "clickstream_engine_state_entries",
            "Live state entries by kind and worker",
            metrics.state_entries.clone(),
        );
        registry.register(
            "clickstream_engine_consumer_lag",
            "Records between the log end and this process's position, per partition",
            metrics.consumer_lag.clone(),
        );
        registry.register_with_unit(
            "clickstream_engine_fetch_queue",
            "Bytes librdkafka fetched ahead of the worker and holds, per worker",
            Unit::Bytes,
            metrics.fetch_queue_bytes.clone(),
        );
        registry.register_with_unit(
            "clickstream_engine_heap",
            "Memory held by each allocator (mimalloc: committed, and live in a live-heap build; libc malloc: in use, and free in its arenas whether resident or trimmed)",
            Unit::Bytes,
            metrics.heap_bytes.clone(),
        );
        registry.register_with_unit(
            "clickstream_engine_checkpoint_age",
            "Time since this process last committed a checkpoint",
            Unit::Seconds,
            metrics.checkpoint_age.clone(),
        );
        registry.register_with_unit(
            "clickstream_engine_complete_until_lag",
            "Time between now and \"complete up to\" (every tenant's: it is one mark, the least over partitions)",
            Unit::Seconds,
            metrics.complete_until_lag.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// Records a committed checkpoint.
    pub fn checkpoint_committed(&self) {
        self.checkpoints.inc();
        self.last_checkpoint_ms
            .store(crate::now_ms() as i64, Ordering::Relaxed);
    }

    /// Records the "complete up to" mark just written to `_progress` (Unix ms).
    pub fn progress_written(&self, complete_until_ms: i64) {
        self.complete_until_ms
            .store(complete_until_ms, Ordering::Relaxed);
    }

    fn record_heap(&self, heap: crate::allocator::HeapBytes) {
        for (allocator, kind, bytes) in [
            ("mimalloc", "committed", heap.mimalloc_committed),
            ("libc", "in_use", heap.libc_in_use),
            ("libc", "free", heap.libc_free),
        ]
        .into_iter()
        .chain(heap.mimalloc_live.map(|live| ("mimalloc", "live", live)))
        {
            self.heap_bytes
                .get_or_create(&HeapLabels { allocator, kind })
                .set(bytes as i64);
        }
    }

    /// The text exposition format; ages are computed at the moment of the scrape.
    pub fn render(&self) -> String {
        let now = crate::now_ms() as i64;
        let since = |ms: &AtomicI64| (now - ms.load(Ordering::Relaxed)).max(0) as f64 / 1000.0;
        self.checkpoint_age.set(since(&self.last_checkpoint_ms));
        if self.complete_until_ms.load(Ordering::Relaxed) > 0 {
            self.complete_until_lag.set(since(&self.complete_until_ms));
        }
        self.record_heap(crate::allocator::heap_bytes());
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Every metric this process exports, by name (for tests and dashboards).
    pub const NAMES: [&'static str; 26] = [
        "clickstream_engine_records_consumed_total",
        "clickstream_engine_dead_letters_total",
        "clickstream_engine_events_written_total",
        "clickstream_engine_sink_failures_total",
        "clickstream_engine_sink_write_duration_seconds",
        "clickstream_engine_checkpoints_total",
        "clickstream_engine_source_errors_total",
        "clickstream_engine_pending_records",
        "clickstream_engine_pending_bytes",
        "clickstream_engine_late_events_total",
        "clickstream_engine_event_corrections_total",
        "clickstream_engine_live_updates_dropped_total",
        "clickstream_engine_retention_deleted_rows_total",
        "clickstream_engine_retention_failures_total",
        "clickstream_engine_identity_claims_refused_total",
        "clickstream_engine_events_erased_total",
        "clickstream_engine_erasures_completed_total",
        "clickstream_engine_erasure_failures_total",
        "clickstream_engine_erasures_pending",
        "clickstream_engine_erasure_oldest_pending_seconds",
        "clickstream_engine_state_entries",
        "clickstream_engine_consumer_lag",
        "clickstream_engine_fetch_queue_bytes",
        "clickstream_engine_heap_bytes",
        "clickstream_engine_checkpoint_age_seconds",
        "clickstream_engine_complete_until_lag_seconds",
    ];

    /// `/metrics` and `/healthz`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = self.clone();
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.render(),
                        )
                            .into_response()
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exported() {
        let metrics = Metrics::default();
        metrics.record_state(0, &operators::StateGauges::default());
        metrics
            .consumer_lag
            .get_or_create(&PartitionLabels { partition: 0 })
            .set(7);
        metrics
            .fetch_queue_bytes
            .get_or_create(&WorkerLabels { worker: 0 })
            .set(512);
        let text = metrics.render();
        for name in Metrics::NAMES {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} is not exported:\n{text}"
            );
        }
    }
}
