//! Per-tenant rate limits: token buckets in Redis, shared by every gateway process, counted in
//! events (a batch of 100 costs 100), one atomic Lua script per request.
//!
//! Redis must never become an ingestion outage. Every call has a deadline of a few
//! milliseconds; when Redis is unreachable, refuses, or is slow (a blackholed connection hangs
//! rather than refuses), the request is decided by a bucket local to this process instead,
//! the fallback is counted, and a background task keeps reconnecting. During an outage each
//! process admits the tenant's full rate on its own, so a fleet of N gateways admits up to N
//! times the quota until Redis is back: availability wins over exactness.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use schemas::tenants::RateLimit;
use tokio::sync::RwLock;

use crate::metrics::Metrics;

/// Refills a bucket by Redis's own clock (`TIME`), so gateways with skewed clocks agree, and
/// returns 0 when the request may pass, else the milliseconds until it could. A request larger
/// than the burst passes on a full bucket and is charged in full: the balance goes negative
/// and the next requests wait until it is paid back, so large batches cannot exceed the rate.
/// KEYS[1]: the bucket; ARGV: events per second, burst, cost.
const TOKEN_BUCKET: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local needed = math.min(cost, burst)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  at = now
end
local wait = 0
if tokens >= needed then
  tokens = tokens - cost
else
  wait = math.ceil((needed - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
";

/// Whether a request may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within quota.
    Allowed,
    /// Over quota: retry after this long.
    Limited {
        /// Until enough tokens are back, ms.
        retry_after_ms: u64,
    },
}

/// Where the buckets live.
#[derive(Debug, Clone)]
pub struct RateLimiterConfig {
    /// `redis://host:port`; empty: local buckets only.
    pub redis_url: String,
    /// Deadline of one Redis call before the local bucket decides.
    pub redis_timeout: Duration,
    /// Prefix of the bucket keys (several deployments may share one Redis).
    pub key_prefix: String,
}

/// Decides whether a tenant's request is within its quota.
#[derive(Debug)]
pub struct RateLimiter {
    redis: Option<RedisBuckets>,
    local: Mutex<HashMap<String, LocalBucket>>,
}

#[derive(Debug)]
struct RedisBuckets {
    connection: Arc<RwLock<Option<ConnectionManager>>>,
    /// Whether the last call (or connection attempt) succeeded.
    healthy: Arc<AtomicBool>,
    script: redis::Script,
    timeout: Duration,
    key_prefix: String,
    reconnect: tokio::task::JoinHandle<()>,
}

impl Drop for RedisBuckets {
    fn drop(&mut self) {
        self.reconnect.abort();
    }
}

#[derive(Debug)]
struct LocalBucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter; with a Redis URL, it starts connecting in the background at once (must be
    /// called within a tokio runtime). Errors: an unparseable Redis URL.
    pub fn new(config: RateLimiterConfig) -> Result<RateLimiter, redis::RedisError> {
        let redis = if config.redis_url.is_empty() {
            None
        } else {
            let client = redis::Client::open(config.redis_url.as_str())?;
            let connection = Arc::new(RwLock::new(None));
            let healthy = Arc::new(AtomicBool::new(false));
            let reconnect =
                tokio::spawn(keep_connected(client, connection.clone(), healthy.clone()));
            Some(RedisBuckets {
                connection,
                healthy,
                script: redis::Script::new(TOKEN_BUCKET),
                timeout: config.redis_timeout,
                key_prefix: config.key_prefix,
                reconnect,
            })
        };
        Ok(RateLimiter {
            redis,
            local: Mutex::new(HashMap::new()),
        })
    }

    /// A limiter with local buckets only (no Redis): each process enforces quotas on its own.
    pub fn local() -> RateLimiter {
        RateLimiter {
            redis: None,
            local: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `events` tokens from `tenant`'s bucket, in Redis when it answers in time, else
    /// locally (counted in `clickstream_ingest_ratelimit_fallbacks_total`).
    pub async fn check(
        &self,
        tenant: &str,
        limit: RateLimit,
        events: usize,
        metrics: &Metrics,
    ) -> Decision {
        if let Some(redis) = &self.redis {
            match redis.take(tenant, limit, events).await {
                Ok(decision) => return decision,
                Err(reason) => {
                    metrics.ratelimit_fallbacks.inc();
                    tracing::debug!(tenant, reason, "rate limit decided locally");
                }
            }
        }
        self.take_locally(tenant, limit, events)
    }

    /// Whether Redis answered the last call in time (for `/readyz`); `None` without Redis.
    pub async fn redis_connected(&self) -> Option<bool> {
        match &self.redis {
            Some(redis) => Some(
                redis.connection.read().await.is_some() && redis.healthy.load(Ordering::Relaxed),
            ),
            None => None,
        }
    }

    fn take_locally(&self, tenant: &str, limit: RateLimit, events: usize) -> Decision {
        let now = Instant::now();
        let burst = f64::from(limit.burst);
        let cost = events as f64;
        let needed = cost.min(burst);
        let mut buckets = self
            .local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(tenant.to_owned()).or_insert(LocalBucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.events_per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= needed {
            bucket.tokens -= cost;
            Decision::Allowed
        } else {
            let wait_secs = (needed - bucket.tokens) / limit.events_per_sec;
            Decision::Limited {
                retry_after_ms: (wait_secs * 1000.0).ceil() as u64,
            }
        }
    }
}

impl RedisBuckets {
    async fn take(
        &self,
        tenant: &str,
        limit: RateLimit,
        events: usize,
    ) -> Result<Decision, &'static str> {
        let Some(mut connection) = self.connection.read().await.clone() else {
            return Err("not connected");
        };
        let mut invocation = self.script.key(format!("{}{tenant}", self.key_prefix));
        invocation
            .arg(limit.events_per_sec)
            .arg(limit.burst)
            .arg(events);
        let outcome = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<u64>(&mut connection),
        )
        .await;
        let answered = matches!(outcome, Ok(Ok(_)));
        match (self.healthy.swap(answered, Ordering::Relaxed), answered) {
            (true, false) => {
                tracing::warn!("Redis did not answer in time; rate limits are per process")
            }
            (false, true) => tracing::info!("Redis answers again; rate limits are shared"),
            _ => {}
        }
        match outcome {
            Ok(Ok(0)) => Ok(Decision::Allowed),
            Ok(Ok(wait_ms)) => Ok(Decision::Limited {
                retry_after_ms: wait_ms,
            }),
            Ok(Err(_)) => Err("redis error"),
            Err(_) => Err("redis too slow"),
        }
    }
}

/// Connects, checks the connection every second with a `PING` of its own deadline, and
/// replaces it when that fails: the 5 ms deadline of a rate-limit call cancels the call, and
/// with it the connection manager's own error handling, so a silently dead (blackholed)
/// connection would otherwise never be replaced.
async fn keep_connected(
    client: redis::Client,
    slot: Arc<RwLock<Option<ConnectionManager>>>,
    healthy: Arc<AtomicBool>,
) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1);
    loop {
        let current = slot.read().await.clone();
        if let Some(mut connection) = current {
            let ping = redis::cmd("PING");
            let answer = ping.query_async::<String>(&mut connection);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(1), answer).await,
                Ok(Ok(_))
            ) {
                tracing::warn!("Redis does not answer PING; reconnecting");
                healthy.store(false, Ordering::Relaxed);
                *slot.write().await = None;
            }
        }
        if slot.read().await.is_none() {
            match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                Ok(connection) => {
                    tracing::info!("connected to Redis for rate limits");
                    *slot.write().await = Some(connection);
                    healthy.store(true, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::warn!(%error, "Redis unreachable; rate limits are local until it is back");
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_buckets_count_events_and_refill() {
        let limiter = RateLimiter::local();
        let metrics = Metrics::default();
        let limit = RateLimit {
            events_per_sec: 1_000.0,
            burst: 10,
        };
        assert_eq!(
            limiter.check("t", limit, 6, &metrics).await,
            Decision::Allowed
        );
        let Decision::Limited { retry_after_ms } = limiter.check("t", limit, 6, &metrics).await
        else {
            panic!("6 + 6 events exceed a burst of 10");
        };
        assert!(
            retry_after_ms <= 2,
            "{retry_after_ms} ms for 2 events at 1000/s"
        );
        assert_eq!(
            limiter.check("other", limit, 10, &metrics).await,
            Decision::Allowed,
            "buckets are per tenant"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            limiter.check("t", limit, 6, &metrics).await,
            Decision::Allowed
        );
        // A request larger than the burst passes on a full bucket and is charged in full:
        // 50 events at 1000/s keep the bucket in debt for 40 ms.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            limiter.check("t", limit, 50, &metrics).await,
            Decision::Allowed
        );
        let Decision::Limited { retry_after_ms } = limiter.check("t", limit, 1, &metrics).await
        else {
            panic!("the bucket is in debt");
        };
        assert!((35..=41).contains(&retry_after_ms), "{retry_after_ms} ms");
    }
}
