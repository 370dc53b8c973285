//! Publishes live counters to Redis once per epoch, for the query gateway's `/live`.
//!
//! Live counters are a courtesy, not data: ClickHouse holds the truth. So a worker never waits
//! for Redis: [`LiveFeed::publish`] puts the epoch's updates on a bounded queue and returns;
//! one task per process drains it with short timeouts and no retries. A full queue (Redis
//! slow or down) drops updates, counted in `clickstream_engine_live_updates_dropped_total`,
//! and a Redis that is down costs one warning per half minute, not an outage.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use redis::Client;
use redis::aio::MultiplexedConnection;
use schemas::live::{LiveUpdate, channel};
use tokio::sync::mpsc;

use crate::retry::Chain;

const TIMEOUT: Duration = Duration::from_millis(300);
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Epoch batches waiting for Redis: a few seconds of epochs from every sink of the process.
const QUEUE: usize = 256;

/// Updates of one epoch: `(tenant, update)`.
pub type Updates = Vec<(String, LiveUpdate)>;

/// A handle on the process's publisher; cheap to clone, one per sink.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    queue: Option<mpsc::Sender<Updates>>,
    dropped: Counter,
}

impl LiveFeed {
    /// Starts the publisher task on `runtime` for `redis_url`; an empty or invalid URL
    /// disables it (the latter with a warning). `dropped` counts updates lost to a full queue.
    pub fn start(redis_url: &str, runtime: &tokio::runtime::Handle, dropped: Counter) -> LiveFeed {
        let client = if redis_url.is_empty() {
            None
        } else {
            Client::open(redis_url)
                .inspect_err(|error| {
                    tracing::warn!(error = %Chain(error), "live counters disabled: bad Redis URL")
                })
                .ok()
        };
        let queue = client.map(|client| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            runtime.spawn(drain(client, receiver));
            sender
        });
        LiveFeed { queue, dropped }
    }

    /// Queues `updates` without waiting; drops them when the queue is full.
    pub fn publish(&self, updates: Updates) {
        let Some(queue) = &self.queue else {
            return;
        };
        if updates.is_empty() {
            return;
        }
        let count = updates.len() as u64;
        if queue.try_send(updates).is_err() {
            self.dropped.inc_by(count);
        }
    }
}

async fn drain(client: Client, mut receiver: mpsc::Receiver<Updates>) {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut last_warning: Option<Instant> = None;
    while let Some(updates) = receiver.recv().await {
        let result = tokio::time::timeout(TIMEOUT, publish(&client, &mut connection, &updates))
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::from(
                    std::io::ErrorKind::TimedOut,
                )))
            });
        if let Err(error) = result {
            connection = None;
            if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                last_warning = Some(Instant::now());
                tracing::warn!(error = %Chain(&error), "cannot publish live counters to Redis; dropping them");
            }
        }
    }
}

async fn publish(
    client: &Client,
    connection: &mut Option<MultiplexedConnection>,
    updates: &Updates,
) -> redis::RedisResult<()> {
    if connection.is_none() {
        *connection = Some(client.get_multiplexed_async_connection().await?);
    }
    let Some(connection) = connection.as_mut() else {
        return Ok(());
    };
    let mut pipeline = redis::pipe();
    for (tenant, update) in updates {
        let payload = serde_json::to_string(update).unwrap_or_default();
        pipeline
            .cmd("PUBLISH")
            .arg(channel(tenant))
            .arg(payload)
            .ignore();
    }
    pipeline.query_async::<()>(connection).await
}
