//! The daily salt of the visitor ids derived for Plausible's Events API, which sends no id.
//!
//! Plausible derives a visitor from `hash(salt, site, address, user agent)` with a salt that
//! changes every day and is deleted after two, so that no stored value can be tied to an
//! address afterwards (<https://plausible.io/data-policy#how-we-count-unique-users-without-cookies>).
//! Every gateway process must hash with the same salt, or one visitor becomes one per process:
//! the salt lives in Redis under `<prefix><UTC day number>`, created by whichever process asks
//! first (`SET NX`) and expiring 48 hours later. Without Redis (a single local gateway) each
//! day's salt is made in the process. With Redis configured but not answering, no id can be
//! derived and the request is refused (503): an id from another salt would split visitors.

use std::sync::Mutex;

use rand::RngCore;
use redis::AsyncCommands;

/// Seconds a salt lives in Redis: the day it is used and the next.
const SALT_TTL_SECS: u64 = 48 * 3600;

const DAY_MS: i64 = 86_400_000;

/// Salts by UTC day.
#[derive(Debug)]
pub struct Salts {
    redis: Option<(redis::Client, String)>,
    /// The last day's salt, so that Redis is asked once per day and process.
    current: Mutex<Option<(i64, [u8; 16])>>,
}

/// Redis did not give a salt.
#[derive(Debug, thiserror::Error)]
#[error("the visitor-id salt is unavailable: {0}")]
pub struct SaltError(#[from] redis::RedisError);

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
            current: Mutex::new(None),
        })
    }

    /// Salts of this process alone.
    pub fn local() -> Salts {
        Salts {
            redis: None,
            current: Mutex::new(None),
        }
    }

    /// The salt of the UTC day of `now_ms`.
    pub async fn of_day(&self, now_ms: i64) -> Result<[u8; 16], SaltError> {
        let day = now_ms.div_euclid(DAY_MS);
        if let Ok(current) = self.current.lock()
            && let Some((cached_day, salt)) = *current
            && cached_day == day
        {
            return Ok(salt);
        }
        let mut fresh = [0u8; 16];
        rand::rng().fill_bytes(&mut fresh);
        let salt = match &self.redis {
            None => fresh,
            Some((client, prefix)) => {
                let key = format!("{prefix}{day}");
                let mut connection = client.get_multiplexed_async_connection().await?;
                let offered = hex(&fresh);
                let options = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::EX(SALT_TTL_SECS));
                let _: Option<String> = connection.set_options(&key, &offered, options).await?;
                let stored: String = connection.get(&key).await?;
                parse_hex(&stored).unwrap_or(fresh)
            }
        };
        if let Ok(mut current) = self.current.lock() {
            *current = Some((day, salt));
        }
        Ok(salt)
    }
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
        let id = visitor_id(&monday, "acme", "203.0.113.7", "Firefox");
        assert_eq!(id, visitor_id(&monday, "acme", "203.0.113.7", "Firefox"));
        assert_eq!(id.len(), 35);
        assert_ne!(id, visitor_id(&tuesday, "acme", "203.0.113.7", "Firefox"));
        assert_ne!(id, visitor_id(&monday, "globex", "203.0.113.7", "Firefox"));
        assert_ne!(id, visitor_id(&monday, "acme", "203.0.113.8", "Firefox"));
        assert_eq!(parse_hex(&hex(&monday)), Some(monday));
    }
}
