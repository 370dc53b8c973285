//! The translation cache: a question's typed query, per tenant, in Redis, shared by every
//! gateway process, so a repeated question spares the model call (and the translator's work).
//! Only the translation is kept: the numbers are computed afresh on every question, so an
//! answer is never stale.
//!
//! The key holds the tenant, who translated (the offline translator, or a provider's model),
//! the tenant's local date (a translation says "yesterday" as a date, so it is good for the
//! day it was made) and the normalized question. Redis is best-effort: an unreachable or slow
//! Redis is a miss, never an error.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::time::Instant;

use tokio::sync::Mutex;

use super::typed::TypedQuery;

/// A cached translation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cached {
    /// What runs.
    pub query: TypedQuery,
    /// The translator's remarks.
    pub notes: Vec<String>,
}

/// How long an entry lives: its date is in its key, so a day (plus a zone's offset) is
/// enough.
const TTL_SECS: u64 = 36 * 3600;
/// Slower than this, Redis is skipped for the question.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// The cache, connected on first use; after a failed connection, tried again 30 s later.
#[derive(Debug)]
pub struct TranslationCache {
    url: String,
    namespace: String,
    connection: Mutex<Connection>,
}

#[derive(Debug, Default)]
struct Connection {
    manager: Option<ConnectionManager>,
    failed_at: Option<Instant>,
}

/// How long an unreachable Redis is left alone before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl TranslationCache {
    /// A cache in the Redis at `url` (`redis://host:port`), its keys under `namespace`
    /// (`clickstream` in the gateway; a test's own elsewhere).
    pub fn new(url: impl Into<String>, namespace: impl Into<String>) -> TranslationCache {
        TranslationCache {
            url: url.into(),
            namespace: namespace.into(),
            connection: Mutex::new(Connection::default()),
        }
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let mut connection = self.connection.lock().await;
        if let Some(manager) = &connection.manager {
            return Some(manager.clone());
        }
        if connection
            .failed_at
            .is_some_and(|failed| failed.elapsed() < RETRY_AFTER)
        {
            return None;
        }
        let attempt = async {
            let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
            match tokio::time::timeout(REDIS_TIMEOUT, ConnectionManager::new(client)).await {
                Ok(Ok(manager)) => Ok(manager),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
            }
        };
        match attempt.await {
            Ok(manager) => {
                connection.manager = Some(manager.clone());
                connection.failed_at = None;
                Some(manager)
            }
            Err(error) => {
                tracing::warn!(%error, "translation cache: Redis unreachable; no cache for 30 s");
                connection.failed_at = Some(Instant::now());
                None
            }
        }
    }

    /// The cached translation of `question`, if any.
    pub async fn get(&self, key: &CacheKey<'_>) -> Option<Cached> {
        let mut connection = self.connection().await?;
        let text: Option<String> =
            match tokio::time::timeout(REDIS_TIMEOUT, connection.get(key.render(&self.namespace)))
                .await
            {
                Ok(Ok(text)) => text,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "translation cache: read failed");
                    None
                }
                Err(_) => None,
            };
        text.and_then(|text| serde_json::from_str(&text).ok())
    }

    /// Keeps a translation.
    pub async fn put(&self, key: &CacheKey<'_>, cached: &Cached) {
        let Some(mut connection) = self.connection().await else {
            return;
        };
        let Ok(text) = serde_json::to_string(cached) else {
            return;
        };
        let write = connection.set_ex::<_, _, ()>(key.render(&self.namespace), text, TTL_SECS);
        if let Ok(Err(error)) = tokio::time::timeout(REDIS_TIMEOUT, write).await {
            tracing::warn!(%error, "translation cache: write failed");
        }
    }
}

impl TranslationCache {
    /// Deletes the tenant's translations whose question or typed query mentions one of
    /// `ids` (an erased person's); returns how many. Redis unreachable: 0, logged (its entries
    /// expire within [`TTL_SECS`] anyway).
    pub async fn forget(&self, tenant: &str, ids: &[String]) -> u64 {
        let Some(mut connection) = self.connection().await else {
            tracing::warn!(
                tenant,
                "translation cache: Redis unreachable; an erased person's cached translations expire within 36 h"
            );
            return 0;
        };
        let pattern = format!("{}:ask:translation:v1:{tenant}:*", self.namespace);
        let keys: Vec<String> = {
            let mut found = Vec::new();
            match connection.scan_match::<_, String>(&pattern).await {
                Ok(mut iter) => {
                    while let Some(key) = futures_util::StreamExt::next(&mut iter).await {
                        match key {
                            Ok(key) => found.push(key),
                            Err(error) => tracing::warn!(%error, "translation cache: scan failed"),
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "translation cache: scan failed");
                    return 0;
                }
            }
            found
        };
        let mut forgotten = 0;
        for key in keys {
            let value: Option<String> = connection.get(&key).await.unwrap_or(None);
            let mentions = |text: &str| ids.iter().any(|id| text.contains(id.as_str()));
            if mentions(&key) || value.as_deref().is_some_and(mentions) {
                match connection.del::<_, u64>(&key).await {
                    Ok(deleted) => forgotten += deleted,
                    Err(error) => tracing::warn!(%error, "translation cache: delete failed"),
                }
            }
        }
        forgotten
    }
}

/// What a translation depends on.
#[derive(Debug, Clone)]
pub struct CacheKey<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// `offline`, or `<provider>:<model>`.
    pub translator: &'a str,
    /// The tenant's local date, `YYYY-MM-DD`.
    pub local_date: String,
    /// The question as asked.
    pub question: &'a str,
}

impl CacheKey<'_> {
    fn render(&self, namespace: &str) -> String {
        format!(
            "{namespace}:ask:translation:v1:{}:{}:{}:{}",
            self.tenant,
            self.translator,
            self.local_date,
            normalize(self.question)
        )
    }
}

/// A question as the cache compares it: single spaces, no trailing punctuation. Case is kept:
/// a person's id (`Ab3x`) and quoted names are matched exactly.
pub fn normalize(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(['?', '.', '!', ' '])
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_meet_whatever_their_spacing_and_punctuation_but_not_case() {
        assert_eq!(
            normalize("  How many  visitors today? "),
            "How many visitors today"
        );
        assert_eq!(
            normalize("how many visitors today"),
            "how many visitors today"
        );
        assert_ne!(normalize("visitors today"), normalize("visitors yesterday"));
        assert_ne!(normalize("activity of Ab3x"), normalize("activity of aB3X"));
    }
}
