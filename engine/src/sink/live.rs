//! Publishes live counters to Redis once per epoch, for the query gateway's `/live`.
//!
//! Live counters are a courtesy, not data: ClickHouse holds the truth. So publishing never
//! blocks a sink for long (short timeouts), never retries, and a Redis that is down costs one
//! warning per half minute, not an outage.

use std::time::{Duration, Instant};

use redis::{Client, Connection};
use schemas::live::{LiveUpdate, channel};

const TIMEOUT: Duration = Duration::from_millis(300);
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A lazily connected publisher (one per sink: connections are not shared across threads).
pub struct LivePublisher {
    client: Option<Client>,
    connection: Option<Connection>,
    last_warning: Option<Instant>,
}

impl std::fmt::Debug for LivePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivePublisher")
            .field("enabled", &self.client.is_some())
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl LivePublisher {
    /// A publisher to `redis_url`; an empty or invalid URL disables it (the latter with a
    /// warning).
    pub fn new(redis_url: &str) -> LivePublisher {
        let client = if redis_url.is_empty() {
            None
        } else {
            Client::open(redis_url)
                .inspect_err(
                    |error| tracing::warn!(%error, "live counters disabled: bad Redis URL"),
                )
                .ok()
        };
        LivePublisher {
            client,
            connection: None,
            last_warning: None,
        }
    }

    /// Publishes each `(tenant, update)`; failures are logged (rate-limited) and dropped.
    pub fn publish(&mut self, updates: &[(String, LiveUpdate)]) {
        if updates.is_empty() {
            return;
        }
        if let Err(error) = self.try_publish(updates) {
            self.connection = None;
            if self
                .last_warning
                .is_none_or(|at| at.elapsed() >= WARN_EVERY)
            {
                self.last_warning = Some(Instant::now());
                tracing::warn!(%error, "cannot publish live counters to Redis; dropping them");
            }
        }
    }

    fn try_publish(&mut self, updates: &[(String, LiveUpdate)]) -> redis::RedisResult<()> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        if self.connection.is_none() {
            let connection = client.get_connection_with_timeout(TIMEOUT)?;
            connection.set_read_timeout(Some(TIMEOUT))?;
            connection.set_write_timeout(Some(TIMEOUT))?;
            self.connection = Some(connection);
        }
        let Some(connection) = self.connection.as_mut() else {
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
        pipeline.query::<()>(connection)
    }
}
