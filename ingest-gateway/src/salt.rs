//! The daily salt of the visitor ids derived for Plausible's Events API, which sends no id.
//!
//! Plausible derives a visitor from `hash(salt, site, address, user agent)` with a salt that
//! changes every day and is deleted after two, so that no stored value can be tied to an
//! address afterwards (<https://plausible.io/data-policy#how-we-count-unique-users-without-cookies>).
//! Every gateway process must hash with the same salt, or one visitor becomes one per process:
//! the salt lives in Redis under `<prefix><UTC day number>`, created by whichever process asks
//! first (`SET NX`) and expiring 48 hours later. Without Redis (a single local gateway) each
//! day's salt is made in the process. With Redis configured but not answering within a second,
//! no id can be derived and the request is refused (503): an id from another salt would split
//! visitors.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::RngCore;
use redis::AsyncCommands;
use tokio::sync::Mutex;

/// Seconds a salt lives in Redis: the day it is used and the next.
const SALT_TTL_SECS: u64 = 48 * 3600;

/// How long a request waits for Redis's answer.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

const DAY_MS: i64 = 86_400_000;

/// Salts by UTC day.
#[derive(Debug)]
pub struct Salts {
    redis: Option<(redis::Client, String)>,
    /// The salts of the days asked for lately (at most two: today's and yesterday's, for a
    /// request that straddles midnight). Held while a missing salt is fetched or made, so
    /// that concurrent first requests of a day agree on one salt and open one connection.
    known: Mutex<BTreeMap<i64, [u8; 16]>>,
}

/// No salt could be had.
#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    /// Redis refused or failed the call.
    #[error("Redis did not give the visitor-id salt: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The stored value is not a salt this gateway wrote.
    #[error("the stored visitor-id salt {0:?} is not 32 hex digits")]
    Corrupt(String),
}

impl Salts {
    /// Salts shared through Redis at `redis_url` (keys `<key_prefix><day>`); an empty URL:
    /// salts of this process alone. Errors: an unparseable URL.
    pub fn new(redis_url: &str, key_prefix: &str) -> Result<Salts, redis::RedisError> {
        let redis = if redis_url.is_empty() {
            None
        } else {
            Some((redis::Client::open(redis_url)?, key_prefix.to_owned()))
        };
        Ok(Salts {
            redis,
            known: Mutex::new(BTreeMap::new()),
        })
    }

    /// Salts of this process alone.
    pub fn local() -> Salts {
        Salts {
            redis: None,
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// The salt of the UTC day of `now_ms`.
    pub async fn of_day(&self, now_ms: i64) -> Result<[u8; 16], SaltError> {
        let day = now_ms.div_euclid(DAY_MS);
        let mut known = self.known.lock().await;
        if let Some(salt) = known.get(&day) {
            return Ok(*salt);
        }
        let mut fresh = [0u8; 16];
        rand::rng().fill_bytes(&mut fresh);
        let salt = match &self.redis {
            None => fresh,
            Some((client, prefix)) => {
                let key = format!("{prefix}{day}");
                let shared = shared_salt(client, &key, &fresh);
                tokio::time::timeout(REDIS_TIMEOUT, shared)
                    .await
                    .map_err(|_| SaltError::Timeout(REDIS_TIMEOUT))??
            }
        };
        known.insert(day, salt);
        while known.len() > 2 {
            known.pop_first();
        }
        Ok(salt)
    }
}

/// The salt stored at `key`, `offered` stored first unless another process was first.
async fn shared_salt(
    client: &redis::Client,
    key: &str,
    offered: &[u8; 16],
) -> Result<[u8; 16], SaltError> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::EX(SALT_TTL_SECS));
    let _: Option<String> = connection.set_options(key, hex(offered), options).await?;
    let stored: String = connection.get(key).await?;
    parse_hex(&stored).ok_or(SaltError::Corrupt(stored))
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<[u8; 16]> {
    let mut salt = [0u8; 16];
    if text.len() != 32 {
        return None;
    }
    for (index, byte) in salt.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(salt)
}

/// The visitor id of a client of `tenant` at `address` with `user_agent` under `salt`:
/// SipHash-1-3 (128-bit) of the three, as 32 hex digits after `pl-`.
pub fn visitor_id(salt: &[u8; 16], tenant: &str, address: &str, user_agent: &str) -> String {
    use std::hash::Hasher as _;
    let mut hasher = siphasher::sip128::SipHasher13::new_with_key(salt);
    for part in [tenant, address, user_agent] {
        hasher.write(part.as_bytes());
        hasher.write_u8(0);
    }
    let hash = siphasher::sip128::Hasher128::finish128(&hasher).as_u128();
    format!("pl-{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_salt_per_day_and_ids_that_only_it_makes() {
        let salts = Salts::local();
        let monday = salts.of_day(0).await.unwrap();
        assert_eq!(salts.of_day(DAY_MS - 1).await.unwrap(), monday);
        let tuesday = salts.of_day(DAY_MS).await.unwrap();
        assert_ne!(tuesday, monday);
        assert_eq!(
            salts.of_day(0).await.unwrap(),
            monday,
            "yesterday's is kept"
        );
        let id = visitor_id(&monday, "acme", "203.0.113.7", "Firefox");
        assert_eq!(id, visitor_id(&monday, "acme", "203.0.113.7", "Firefox"));
        assert_eq!(id.len(), 35);
        assert_ne!(id, visitor_id(&tuesday, "acme", "203.0.113.7", "Firefox"));
        assert_ne!(id, visitor_id(&monday, "globex", "203.0.113.7", "Firefox"));
        assert_ne!(id, visitor_id(&monday, "acme", "203.0.113.8", "Firefox"));
        assert_eq!(parse_hex(&hex(&monday)), Some(monday));
        assert_eq!(parse_hex("not hex"), None);
    }
}
