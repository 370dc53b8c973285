//! `GET /live`: each tenant's live counters as Server-Sent Events, relayed from the engine's
//! per-epoch Redis messages (see `schemas::live`).
//!
//! One Redis subscription per gateway feeds a hub that keeps every tenant's latest state and
//! broadcasts changes; each browser stream filters them by its read key's tenant. The SSE id is
//! the engine epoch, so a browser that reconnects with `Last-Event-ID` gets the current state
//! at once only when it is newer than what it already has.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::StreamExt as _;
use schemas::live::{CHANNEL_PREFIX, LiveUpdate};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events per second are averaged over this window of epochs.
const RATE_WINDOW_MS: i64 = 10_000;

/// What a browser is sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveState {
    /// Newest engine epoch seen for the tenant.
    pub epoch: u64,
    /// Its wall-clock time, Unix ms.
    pub at_ms: i64,
    /// Visitors active in the last five minutes.
    pub active_visitors: i64,
    /// Events processed per second over the last ten seconds.
    pub events_per_sec: f64,
}

#[derive(Debug, Default)]
struct TenantLive {
    epoch: u64,
    at_ms: i64,
    active_visitors: i64,
    /// `(epoch time, events)` within the rate window.
    events: VecDeque<(i64, u64)>,
}

impl TenantLive {
    fn state(&mut self, now_ms: i64) -> LiveState {
        while self
            .events
            .front()
            .is_some_and(|(at, _)| *at <= now_ms - RATE_WINDOW_MS)
        {
            self.events.pop_front();
        }
        let events: u64 = self.events.iter().map(|(_, n)| n).sum();
        LiveState {
            epoch: self.epoch,
            at_ms: self.at_ms,
            active_visitors: self.active_visitors,
            events_per_sec: events as f64 * 1000.0 / RATE_WINDOW_MS as f64,
        }
    }
}

/// Every tenant's latest live state, and the broadcast of changes.
#[derive(Debug)]
pub struct LiveHub {
    tenants: Mutex<HashMap<String, (TenantLive, Option<LiveState>)>>,
    changes: broadcast::Sender<(String, LiveState)>,
}

impl Default for LiveHub {
    fn default() -> Self {
        LiveHub {
            tenants: Mutex::default(),
            changes: broadcast::channel(1024).0,
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl LiveHub {
    /// Applies one engine message and broadcasts the tenant's new state if it changed.
    pub fn apply(&self, tenant: &str, update: &LiveUpdate) {
        self.apply_at(tenant, update, now_ms());
    }

    fn apply_at(&self, tenant: &str, update: &LiveUpdate, now_ms: i64) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        let (live, _) = tenants.entry(tenant.to_owned()).or_default();
        if update.epoch >= live.epoch {
            live.epoch = update.epoch;
            live.at_ms = update.at_ms;
        }
        if let Some(active) = update.active_visitors {
            live.active_visitors = active;
        }
        if let Some(events) = update.events {
            live.events.push_back((update.at_ms, events));
        }
        drop(tenants);
        self.refresh(Some(tenant), now_ms);
    }

    /// Recomputes rates at `now_ms` (they decay when traffic stops) and broadcasts what changed.
    pub fn refresh(&self, only: Option<&str>, now_ms: i64) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        for (tenant, (live, sent)) in tenants.iter_mut() {
            if only.is_some_and(|only| only != tenant) {
                continue;
            }
            let state = live.state(now_ms);
            if sent.as_ref() != Some(&state) {
                *sent = Some(state.clone());
                // No receiver is fine: nobody is watching this tenant.
                let _ = self.changes.send((tenant.clone(), state));
            }
        }
    }

    /// The latest state of `tenant`, if any message arrived for it.
    pub fn latest(&self, tenant: &str) -> Option<LiveState> {
        let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        tenants.get(tenant).and_then(|(_, sent)| sent.clone())
    }

    /// Follows the engine's messages in Redis for as long as the process runs, reconnecting
    /// with backoff; also refreshes rates every second.
    pub fn follow_redis(self: &Arc<Self>, redis_url: String) {
        let hub = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match hub.subscribe_once(&redis_url).await {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "live counters: Redis unavailable")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
        let hub = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                hub.refresh(None, now_ms());
            }
        });
    }

    async fn subscribe_once(&self, redis_url: &str) -> redis::RedisResult<()> {
        let client = redis::Client::open(redis_url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(format!("{CHANNEL_PREFIX}*")).await?;
        tracing::info!("live counters: subscribed to Redis");
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Some(tenant) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                continue;
            };
            match serde_json::from_slice::<LiveUpdate>(message.get_payload_bytes()) {
                Ok(update) => self.apply(tenant, &update),
                Err(error) => {
                    tracing::warn!(%error, tenant, "live counters: malformed message skipped")
                }
            }
        }
        Ok(())
    }

    /// The SSE stream of `tenant`: its current state first (unless the client already has it,
    /// per `last_event_id`), then every change, for at most `lifetime`. Browsers reconnect on
    /// their own (with `Last-Event-ID`); ending streams now and then spreads long-lived
    /// connections over restarted or added gateways and outlives proxies' idle limits.
    pub fn stream(
        &self,
        tenant: String,
        last_event_id: Option<u64>,
        lifetime: Duration,
    ) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
        let receiver = self.changes.subscribe();
        let first = self
            .latest(&tenant)
            .filter(|state| last_event_id.is_none_or(|seen| state.epoch > seen));
        let initial = futures_util::stream::iter(first.map(|state| Ok(event(&state))));
        let changes = futures_util::stream::unfold(receiver, move |mut receiver| {
            let tenant = tenant.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok((changed, state)) if changed == tenant => {
                            return Some((Ok(event(&state)), receiver));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        let stream = initial
            .chain(changes)
            .take_until(tokio::time::sleep(lifetime));
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
}

fn event(state: &LiveState) -> Event {
    let data = serde_json::to_string(state).unwrap_or_default();
    Event::default()
        .event("counters")
        .id(state.epoch.to_string())
        .retry(Duration::from_secs(2))
        .data(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(epoch: u64, active: Option<i64>, events: Option<u64>) -> LiveUpdate {
        LiveUpdate {
            epoch,
            at_ms: epoch as i64 * 1_000,
            active_visitors: active,
            events,
        }
    }

    #[test]
    fn rates_sum_every_worker_and_decay() {
        let hub = LiveHub::default();
        hub.apply_at("acme", &update(100, Some(4), None), 100_500);
        hub.apply_at("acme", &update(100, None, Some(30)), 100_500);
        hub.apply_at("acme", &update(101, None, Some(20)), 101_000);
        hub.refresh(None, 101_000);
        let state = hub.latest("acme").unwrap_or_else(|| panic!("state"));
        assert_eq!((state.epoch, state.active_visitors), (101, 4));
        assert!((state.events_per_sec - 5.0).abs() < 1e-9, "{state:?}");
        hub.refresh(None, 111_000);
        let state = hub.latest("acme").unwrap_or_else(|| panic!("state"));
        assert_eq!(
            state.events_per_sec, 0.0,
            "ten seconds later nothing is flowing"
        );
        assert_eq!(hub.latest("globex"), None);
    }
}
