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
use tokio::sync::OnceCell;

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

/// The cache, connected on first use.
#[derive(Debug)]
pub struct TranslationCache {
    url: String,
    namespace: String,
    connection: OnceCell<Option<ConnectionManager>>,
}

impl TranslationCache {
    /// A cache in the Redis at `url` (`redis://host:port`), its keys under `namespace`
    /// (`clickstream` in the gateway; a test's own elsewhere).
    pub fn new(url: impl Into<String>, namespace: impl Into<String>) -> TranslationCache {
        TranslationCache {
            url: url.into(),
            namespace: namespace.into(),
            connection: OnceCell::new(),
        }
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        self.connection
            .get_or_init(|| async {
                let client = match redis::Client::open(self.url.as_str()) {
                    Ok(client) => client,
                    Err(error) => {
                        tracing::error!(%error, "translation cache: bad Redis URL; no cache");
                        return None;
                    }
                };
                match tokio::time::timeout(Duration::from_secs(2), ConnectionManager::new(client))
                    .await
                {
                    Ok(Ok(connection)) => Some(connection),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "translation cache: Redis unreachable; no cache");
                        None
                    }
                    Err(_) => {
                        tracing::warn!("translation cache: Redis did not answer; no cache");
                        None
                    }
                }
            })
            .await
            .clone()
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

/// A question as the cache compares it: lowercase, single spaces, no trailing punctuation.
pub fn normalize(question: &str) -> String {
    question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches(['?', '.', '!', ' '])
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_meet_whatever_their_case_spacing_and_punctuation() {
        assert_eq!(
            normalize("  How many  visitors today? "),
            "how many visitors today"
        );
        assert_eq!(
            normalize("how many visitors today"),
            "how many visitors today"
        );
        assert_ne!(normalize("visitors today"), normalize("visitors yesterday"));
    }
}
