//! Writing to ClickHouse from the (synchronous) worker threads: the async runtime the writes
//! run on and the retry rule every write follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::clickhouse::SinkError;
use crate::metrics::Metrics;
use crate::retry::{Backoff, Chain, stop};

/// The I/O runtime, and what writing to ClickHouse with retries needs: shared by the sinks,
/// the checkpoint and the sources' bookkeeping writes (plans, log stalls).
#[derive(Debug, Clone)]
pub struct IoRuntime {
    /// Runs the async client from the (synchronous) worker thread.
    pub runtime: tokio::runtime::Handle,
    /// Set on SIGTERM, to say why a retry loop is holding up the exit.
    pub shutdown: Arc<AtomicBool>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl IoRuntime {
    /// Runs `write` until it succeeds, retrying transient errors with [`Backoff`].
    ///
    /// It never gives up on a transient error, not even on shutdown: giving up would release
    /// the epoch's capability, and the checkpoint could then commit offsets of rows that were
    /// never written. A shutdown waits for ClickHouse; SIGKILL is always safe (nothing
    /// uncommitted is lost, it is replayed). A permanent error ([`SinkError::is_permanent`])
    /// stops the process with [`stop`] instead of retrying forever behind a warning.
    pub async fn retry<F, Fut>(&self, what: &str, write: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), SinkError>>,
    {
        let started = Instant::now();
        let result = self
            .backoff
            .run(
                write,
                |error: &SinkError| !error.is_permanent(),
                |error, wait| {
                    self.metrics.sink_failures.inc();
                    let (error, retry_in_ms) = (Chain(error), wait.as_millis() as u64);
                    if self.shutdown.load(Ordering::Relaxed) {
                        tracing::error!(%error, what, retry_in_ms, "shutdown is waiting for ClickHouse to accept an epoch (SIGKILL is safe: it will be replayed)");
                    } else {
                        tracing::warn!(%error, what, retry_in_ms, "ClickHouse write failed; retrying");
                    }
                },
            )
            .await;
        match result {
            Ok(()) => self
                .metrics
                .sink_write_duration
                .observe(started.elapsed().as_secs_f64()),
            Err(error) => {
                self.metrics.sink_failures.inc();
                stop(what, &error)
            }
        }
    }

    /// As [`IoRuntime::retry`], holding the worker until the write succeeds: for the writes
    /// that must be durable before the worker goes on (the epoch plan before the epoch
    /// closes, the checkpoint before its report), while the source's backpressure bound keeps
    /// the other workers from buffering without limit meanwhile.
    pub fn write_with_retry<F, Fut>(&self, what: &str, write: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), SinkError>>,
    {
        self.runtime.block_on(self.retry(what, write));
    }
}
