//! Retention per tenant and tiered storage, as SQL: which tables hold per-person rows, how long
//! each tenant keeps them, and when rows move to a slower volume.
//!
//! - Servers with TTL ([`crate::version::ServerVersion::has_ttl`]) get one `TTL` clause per table
//!   ([`Plan::ttl`]): `TO VOLUME` moves for every tenant, and a `DELETE WHERE tenant = …` rule
//!   per tenant with a retention. ClickHouse applies it in merges and in background moves
//!   (<https://clickhouse.com/docs/engines/table-engines/mergetree-family/mergetree#table_engine-mergetree-ttl>).
//! - Debian's 18.16 has no TTL, and its monthly partitions hold every tenant, so a partition
//!   cannot be dropped for one tenant: its expired rows go with `ALTER TABLE … DELETE`
//!   mutations on a schedule ([`Plan::deletions`]).
//!
//! The per-minute rollups (`agg_minute_metrics`) hold no person's or visitor's id and are
//! never deleted; they move between volumes like the rest.

use crate::tenants::Tenants;

/// The tables with per-person rows (ids of visitors or persons), each with the time column
/// their age is read from.
/// Not covered (kept for good): the identity graph (`identities`, `identity_claims`), Ask's
/// questions (`ask_log`) and `_dead_letters` (undecodable records, no tenant): erasure, not
/// retention, is what removes a person from those.
pub const RETAINED: [(&str, &str); 4] = [
    ("events", "event_time"),
    ("sessions", "start_time"),
    ("agg_hour_visitors", "hour"),
    ("ingestion_warnings", "received_at"),
];

/// The tables that move between volumes as they age: the per-person ones and the rollups.
pub const TIERED: [(&str, &str); 5] = [
    ("events", "event_time"),
    ("sessions", "start_time"),
    ("agg_hour_visitors", "hour"),
    ("ingestion_warnings", "received_at"),
    ("agg_minute_metrics", "minute"),
];

/// A storage tier: rows older than `after_days` live on `volume` (a volume of the server's
/// storage policy, e.g. `warm` on HDDs, `cold` on object storage).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The volume's name in the storage policy.
    pub volume: String,
    /// Age, in days of the table's time column, from which rows move there.
    pub after_days: u32,
}

/// What to keep, and where: every tenant's retention and the storage tiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(tenant, days)`, sorted by tenant: only tenants with a retention.
    pub retention: Vec<(String, u32)>,
    /// Tiers, by age.
    pub tiers: Vec<Tier>,
}

/// One tenant's expired rows of one table, on a server without TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// Table.
    pub table: &'static str,
    /// Tenant.
    pub tenant: String,
    /// Rows whose time column is before this (Unix seconds) go.
    pub cutoff_secs: i64,
    /// The table's time column.
    column: &'static str,
}

impl Deletion {
    /// Whether anything would go: `SELECT count()` on the sort key's prefix, cheap.
    pub fn count_sql(&self, database: &str) -> String {
        format!(
            "SELECT count() FROM {database}.{} WHERE {}",
            self.table,
            self.condition()
        )
    }

    /// The mutation.
    pub fn delete_sql(&self, database: &str) -> String {
        format!(
            "ALTER TABLE {database}.{} DELETE WHERE {}",
            self.table,
            self.condition()
        )
    }

    fn condition(&self) -> String {
        format!(
            "tenant = '{}' AND {} < toDateTime({})",
            self.tenant, self.column, self.cutoff_secs
        )
    }
}

impl Plan {
    /// The plan of `tenants`' retentions and `tiers`.
    pub fn new(tenants: &Tenants, tiers: &[Tier]) -> Plan {
        let mut retention: Vec<(String, u32)> = tenants
            .all()
            .filter_map(|tenant| Some((tenant.id.clone(), tenant.retention_days?)))
            .collect();
        retention.sort();
        let mut tiers = tiers.to_vec();
        tiers.sort_by_key(|tier| tier.after_days);
        Plan { retention, tiers }
    }

    /// The `TTL` expression list of `table` (without the keyword), `None` when the table has
    /// none: moves for every row, then one delete rule per tenant with a retention. Tenant
    /// ids are identifiers ([`crate::ddl::is_valid_identifier`]), safe to quote.
    pub fn ttl(&self, table: &str) -> Option<String> {
        let (_, column) = TIERED.iter().find(|(name, _)| *name == table)?;
        let mut rules: Vec<String> = self
            .tiers
            .iter()
            .map(|tier| {
                format!(
                    "{column} + INTERVAL {} DAY TO VOLUME '{}'",
                    tier.after_days, tier.volume
                )
            })
            .collect();
        if RETAINED.iter().any(|(name, _)| *name == table) {
            rules.extend(self.retention.iter().map(|(tenant, days)| {
                format!("{column} + INTERVAL {days} DAY DELETE WHERE tenant = '{tenant}'")
            }));
        }
        (!rules.is_empty()).then(|| rules.join(", "))
    }

    /// The statement that makes `table`'s TTL this plan's, on a server that has TTL.
    pub fn modify_ttl_sql(&self, database: &str, table: &str) -> String {
        match self.ttl(table) {
            Some(ttl) => format!("ALTER TABLE {database}.{table} MODIFY TTL {ttl}"),
            None => format!("ALTER TABLE {database}.{table} REMOVE TTL"),
        }
    }

    /// The deletions due at `now_secs`, for a server without TTL.
    pub fn deletions(&self, now_secs: i64) -> Vec<Deletion> {
        self.retention
            .iter()
            .flat_map(|(tenant, days)| {
                RETAINED.iter().map(move |(table, column)| Deletion {
                    table,
                    tenant: tenant.clone(),
                    cutoff_secs: horizon_secs(*days, now_secs),
                    column,
                })
            })
            .collect()
    }
}

/// Where a tenant's raw rows start at `now_secs` (Unix seconds) with a retention of `days`:
/// rows older than this are deleted, or due to be. It moves by whole UTC days (keeping up to
/// a day more than `days`), so that on servers without TTL a tenant's rows are deleted once a
/// day, not at every pass.
pub fn horizon_secs(days: u32, now_secs: i64) -> i64 {
    (now_secs - i64::from(days) * 86_400).div_euclid(86_400) * 86_400
}

/// The `_retention.table_name` of a mark: "the tenant's raw rows before `cutoff_secs` are
/// deleted or due to be", written by the engine at each pass whose horizon moved. The query
/// gateway starts a tenant's raw rows at the latest mark when that is later than its own
/// reading of `retention_days` (a retention raised since deleted rows the new one would keep).
pub const MARK: &str = "*";

/// The latest mark of a tenant: binds [`MARK`] and the tenant; one row `(marks UInt64,
/// cutoff Int64)`, `marks = 0` before any.
pub const LATEST_MARK_SQL: &str = "SELECT count() AS marks, max(cutoff_secs) AS cutoff \
     FROM _retention WHERE table_name = ? AND tenant = ?";

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let tenants = Tenants::parse(
            "[[tenants]]\nid = \"globex\"\nwrite_keys = [\"w2\"]\nretention_days = 90\n\
             [[tenants]]\nid = \"acme\"\nwrite_keys = [\"w1\"]\nretention_days = 30\n\
             [[tenants]]\nid = \"initech\"\nwrite_keys = [\"w3\"]\n",
        )
        .unwrap_or_else(|error| panic!("{error}"));
        let tiers = [
            Tier {
                volume: "cold".into(),
                after_days: 60,
            },
            Tier {
                volume: "warm".into(),
                after_days: 7,
            },
        ];
        Plan::new(&tenants, &tiers)
    }

    #[test]
    fn ttl_moves_every_table_and_deletes_per_tenant_only_per_person_rows() {
        let plan = plan();
        assert_eq!(
            plan.ttl("events").as_deref(),
            Some(
                "event_time + INTERVAL 7 DAY TO VOLUME 'warm', event_time + INTERVAL 60 DAY TO VOLUME 'cold', \
                 event_time + INTERVAL 30 DAY DELETE WHERE tenant = 'acme', \
                 event_time + INTERVAL 90 DAY DELETE WHERE tenant = 'globex'"
            )
        );
        let rollups = plan.ttl("agg_minute_metrics").unwrap_or_default();
        assert!(
            rollups.contains("TO VOLUME") && !rollups.contains("DELETE"),
            "{rollups}"
        );
        assert_eq!(plan.ttl("_checkpoints"), None);
        assert_eq!(
            Plan::default().modify_ttl_sql("db", "events"),
            "ALTER TABLE db.events REMOVE TTL"
        );
    }

    #[test]
    fn old_servers_delete_each_tenants_expired_rows() {
        let deletions = plan().deletions(100 * 86_400);
        assert_eq!(deletions.len(), 2 * RETAINED.len());
        assert_eq!(
            deletions[0].delete_sql("db"),
            "ALTER TABLE db.events DELETE WHERE tenant = 'acme' AND event_time < toDateTime(6048000)"
        );
        assert_eq!(
            deletions[0].count_sql("db"),
            "SELECT count() FROM db.events WHERE tenant = 'acme' AND event_time < toDateTime(6048000)"
        );
        assert!(deletions.iter().all(|d| d.tenant != "initech"));
    }

    #[test]
    fn a_retention_of_zero_days_is_refused() {
        assert!(
            Tenants::parse("[[tenants]]\nid = \"a\"\nwrite_keys = [\"w\"]\nretention_days = 0\n")
                .is_err()
        );
    }
}
