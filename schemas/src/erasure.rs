//! Erasure (GDPR Art. 17, CCPA) and suppression: which events no stage may keep.
//!
//! A person's ids never travel: the query gateway hashes them ([`id_hash`]) with the
//! deployment's secret salt, and the control topic, the engine's state and the audit table
//! (`_deletions`) hold only the hashes. The engine hashes the ids of an event only when its
//! tenant has an erasure, so tenants without one pay nothing.
//!
//! The rule is a function of the set of control records and of an event's receipt time, so a
//! replay that reads the control topic whole before the events (and in any order) decides
//! every event as the first run did (Segment's "suppress and delete"):
//! - an erasure at `E` removes every event carrying the id received at or before `E`;
//! - it also suppresses later events carrying the id, until a lift at `L >= E`: an event
//!   received after `L` is kept when the latest action before it is a lift (a lift at the very
//!   instant of an erasure counts as the later one);
//! - a tenant's removal at `R` removes every event of the tenant received at or before `R`.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::ControlMessage;

/// The hash that stands for `id` of `tenant`: lowercase hex of SHA-256 over
/// `salt ‖ 0x00 ‖ tenant ‖ 0x00 ‖ id`. ClickHouse computes the same value with
/// `lower(hex(SHA256(concat(salt, '\0', tenant, '\0', id))))` ([`id_hash_sql`]), which is how
/// the engine finds stored rows from the hashes alone.
pub fn id_hash(salt: &str, tenant: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0]);
    hasher.update(tenant.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    hex::encode(hasher.finalize())
}

/// A short fingerprint of a salt (16 hex digits of a SHA-256 that no id hash can collide
/// with), carried by each erasure so that an engine can tell it holds the gateway's salt
/// without either revealing it.
pub fn salt_check(salt: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"clickstream erasure salt check\0");
    hasher.update(salt.as_bytes());
    hex::encode(hasher.finalize())[..16].to_owned()
}

/// The SQL expression of [`id_hash`] over a String column of a table with a `tenant` column.
/// `salt` must be a literal the caller has escaped ([`quote`]).
pub fn id_hash_sql(quoted_salt: &str, column: &str) -> String {
    format!("lower(hex(SHA256(concat({quoted_salt}, '\\0', tenant, '\\0', {column}))))")
}

/// A ClickHouse string literal (quotes and backslashes escaped).
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// One action of the control topic on an id's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Erase,
    Lift,
}

/// Every erasure, lift and tenant removal read from the control topic so far.
#[derive(Debug, Clone, Default)]
pub struct ErasureLog {
    salt: String,
    /// Per tenant, per id hash, the actions as (time ms, action), sorted.
    ids: HashMap<String, HashMap<String, Vec<(i64, Action)>>>,
    /// Per tenant, the latest removal (ms).
    removed: HashMap<String, i64>,
}

impl ErasureLog {
    /// An empty log whose hashes use `salt` (the deployment's secret).
    pub fn new(salt: &str) -> ErasureLog {
        ErasureLog {
            salt: salt.to_owned(),
            ..ErasureLog::default()
        }
    }

    /// The tenants removed so far.
    pub fn removed_tenants(&self) -> impl Iterator<Item = &str> {
        self.removed.keys().map(String::as_str)
    }

    /// Whether nothing was ever erased (the engine then skips every check).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.removed.is_empty()
    }

    /// Records an erasure of these hashes at `at_ms`. Idempotent.
    pub fn erase(&mut self, tenant: &str, hashes: &[String], at_ms: i64) {
        self.record(tenant, hashes, at_ms, Action::Erase);
    }

    /// Records a lift of the suppression of these hashes at `at_ms`. Idempotent.
    pub fn lift(&mut self, tenant: &str, hashes: &[String], at_ms: i64) {
        self.record(tenant, hashes, at_ms, Action::Lift);
    }

    /// Applies a control record (unmerges and remerges are not erasures: ignored).
    pub fn apply(&mut self, message: &ControlMessage) {
        match message {
            ControlMessage::Erase {
                tenant,
                id_hashes,
                requested_at_ms,
                ..
            } => self.erase(tenant, id_hashes, *requested_at_ms),
            ControlMessage::LiftSuppression {
                tenant,
                id_hashes,
                lifted_at_ms,
            } => self.lift(tenant, id_hashes, *lifted_at_ms),
            ControlMessage::RemoveTenant {
                tenant,
                requested_at_ms,
                ..
            } => self.remove_tenant(tenant, *requested_at_ms),
            ControlMessage::Unmerge { .. }
            | ControlMessage::Remerge { .. }
            | ControlMessage::RecountRollups { .. } => {}
        }
    }

    /// Records the removal of a whole tenant at `at_ms`.
    pub fn remove_tenant(&mut self, tenant: &str, at_ms: i64) {
        let latest = self.removed.entry(tenant.to_owned()).or_insert(at_ms);
        *latest = (*latest).max(at_ms);
    }

    fn record(&mut self, tenant: &str, hashes: &[String], at_ms: i64, action: Action) {
        let by_hash = self.ids.entry(tenant.to_owned()).or_default();
        for hash in hashes {
            let actions = by_hash.entry(hash.clone()).or_default();
            if let Err(at) = actions.binary_search(&(at_ms, action)) {
                actions.insert(at, (at_ms, action));
            }
        }
    }

    /// Whether an event of `tenant` received at `received_at_ms` and carrying `ids` (empty
    /// ones are skipped) must not be kept.
    pub fn drops<'a>(
        &self,
        tenant: &str,
        received_at_ms: i64,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        let removed = self
            .removed
            .get(tenant)
            .is_some_and(|removed| received_at_ms <= *removed);
        removed || self.any_id(tenant, ids, |actions| drops_at(actions, received_at_ms))
    }

    /// Whether the actions on any of `ids` (empty ones skipped) of `tenant` satisfy `test`;
    /// ids are hashed only when the tenant has an erasure.
    fn any_id<'a>(
        &self,
        tenant: &str,
        ids: impl IntoIterator<Item = &'a str>,
        test: impl Fn(&[(i64, Action)]) -> bool,
    ) -> bool {
        let Some(by_hash) = self.ids.get(tenant) else {
            return false;
        };
        ids.into_iter().filter(|id| !id.is_empty()).any(|id| {
            by_hash
                .get(&id_hash(&self.salt, tenant, id))
                .is_some_and(|actions| test(actions))
        })
    }

    /// Whether any of `ids` of `tenant` was ever erased, or the tenant removed: what an
    /// identity claim, which has no receipt time, is judged by.
    pub fn ever_erased<'a>(&self, tenant: &str, ids: impl IntoIterator<Item = &'a str>) -> bool {
        self.removed.contains_key(tenant)
            || self.any_id(tenant, ids, |actions| {
                actions.iter().any(|(_, action)| *action == Action::Erase)
            })
    }
}

/// The rule of the module's documentation over one id's sorted actions.
fn drops_at(actions: &[(i64, Action)], received_at_ms: i64) -> bool {
    let erased_later = actions
        .iter()
        .any(|(at, action)| *action == Action::Erase && *at >= received_at_ms);
    let latest_before = actions
        .iter()
        .rev()
        .find(|(at, _)| *at < received_at_ms)
        .map(|(_, action)| *action);
    erased_later || latest_before == Some(Action::Erase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_salted_per_tenant_and_matches_known_sha256() {
        // sha256("s\0demo\0x"), computed by ClickHouse 18.16 with the SQL of `id_hash_sql`.
        assert_eq!(
            id_hash("s", "demo", "x"),
            "88eded14a00fe84e8b77fa8a63aa0fb3a5519e623ecd460068b4501061dd068b"
        );
        assert_ne!(id_hash("s", "demo", "x"), id_hash("t", "demo", "x"));
        assert_ne!(id_hash("s", "demo", "x"), id_hash("s", "acme", "x"));
    }

    #[test]
    fn erasure_suppression_and_lift_follow_receipt_time_in_any_order() {
        let h = vec![id_hash("s", "t", "alice")];
        let records: [(bool, i64); 3] = [(true, 100), (false, 200), (true, 300)];
        // Every order of applying the same records gives the same decisions.
        for order in [[0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0]] {
            let mut log = ErasureLog::new("s");
            for index in order {
                let (erase, at) = records[index];
                if erase {
                    log.erase("t", &h, at);
                } else {
                    log.lift("t", &h, at);
                }
            }
            for (received, dropped) in [
                (50, true),  // before the first erasure
                (100, true), // at it
                (150, true), // suppressed
                (250, true), // after the lift, but erased again at 300
                (301, true), // suppressed again
                (1_000, true),
            ] {
                assert_eq!(log.drops("t", received, ["alice"]), dropped, "{received}");
            }
            assert!(!log.drops("t", 150, ["bob"]));
            assert!(!log.drops("u", 150, ["alice"]));
        }
        // An erasure and its lift, applied in either order.
        for lift_first in [false, true] {
            let mut lifted = ErasureLog::new("s");
            if lift_first {
                lifted.lift("t", &h, 200);
            }
            lifted.erase("t", &h, 100);
            if !lift_first {
                lifted.lift("t", &h, 200);
            }
            assert!(lifted.drops("t", 150, ["", "alice"]));
            assert!(!lifted.drops("t", 201, ["alice"]));
            assert!(lifted.drops("t", 99, ["alice"]));
            assert!(!lifted.ever_erased("t", ["bob"]));
            assert!(lifted.ever_erased("t", ["alice"]));
        }
        // A lift at the very instant of an erasure counts as the later one.
        let mut tie = ErasureLog::new("s");
        tie.erase("t", &h, 100);
        tie.lift("t", &h, 100);
        assert!(!tie.drops("t", 101, ["alice"]));
        assert!(tie.drops("t", 100, ["alice"]));
    }

    #[test]
    fn a_removed_tenant_loses_what_was_received_until_its_removal() {
        let mut log = ErasureLog::new("s");
        assert!(log.is_empty());
        log.remove_tenant("t", 500);
        assert!(log.drops("t", 500, std::iter::empty()));
        assert!(!log.drops("t", 501, std::iter::empty()));
        assert!(!log.drops("u", 1, std::iter::empty()));
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
    }
}
