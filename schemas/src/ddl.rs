//! ClickHouse DDL, kept as `.sql` files so they read (and diff) as SQL.
//!
//! The statements must run on Debian's ClickHouse 18.16 and on current servers. Features that
//! only newer servers have are placeholders filled in by [`render`] according to the
//! [`ServerVersion`] the component detected at start; [`crate::version`] decides which.

pub use crate::version::ServerVersion;

/// Every table, in creation order, as `(name, template)`.
pub const TABLES: &[(&str, &str)] = &[
    ("events", include_str!("../sql/events.sql")),
    ("_checkpoints", include_str!("../sql/checkpoints.sql")),
    ("_dead_letters", include_str!("../sql/dead_letters.sql")),
    ("sessions", include_str!("../sql/sessions.sql")),
    ("identities", include_str!("../sql/identities.sql")),
    (
        "identity_claims",
        include_str!("../sql/identity_claims.sql"),
    ),
    (
        "agg_minute_metrics",
        include_str!("../sql/agg_minute_metrics.sql"),
    ),
    (
        "agg_hour_visitors",
        include_str!("../sql/agg_hour_visitors.sql"),
    ),
    ("live_counters", include_str!("../sql/live_counters.sql")),
    ("_epochs", include_str!("../sql/epochs.sql")),
    ("_progress", include_str!("../sql/progress.sql")),
    (
        "ingestion_warnings",
        include_str!("../sql/ingestion_warnings.sql"),
    ),
    ("ask_log", include_str!("../sql/ask_log.sql")),
    ("_log_stalls", include_str!("../sql/log_stalls.sql")),
    ("_retention", include_str!("../sql/retention.sql")),
    ("_deletions", include_str!("../sql/deletions.sql")),
];

/// Columns added to a table after it was first released, as `(table, column, type)`: a table
/// created by an older version gets them with `ALTER TABLE … ADD COLUMN` (ClickHouse 18.16
/// has no `ADD COLUMN IF NOT EXISTS`, so the caller checks `system.columns` first). Each is
/// also in its table's template.
pub const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("_checkpoints", "log_mark", "UInt64 DEFAULT 0"),
    ("ingestion_warnings", "detail", "String DEFAULT ''"),
    // Issue 22: the gateway's enrichment and the last two UTM fields.
    ("events", "utm_content", "String DEFAULT ''"),
    ("events", "utm_term", "String DEFAULT ''"),
    ("events", "source", "String DEFAULT ''"),
    ("events", "channel", "{lc_string} DEFAULT ''"),
    ("events", "device", "{lc_string} DEFAULT ''"),
    ("events", "browser", "{lc_string} DEFAULT ''"),
    ("events", "browser_version", "{lc_string} DEFAULT ''"),
    ("events", "os", "{lc_string} DEFAULT ''"),
    ("events", "os_version", "{lc_string} DEFAULT ''"),
    ("events", "country", "{lc_string} DEFAULT ''"),
    ("events", "region", "String DEFAULT ''"),
    ("events", "city", "String DEFAULT ''"),
    ("events", "non_interactive", "UInt8 DEFAULT 0"),
    ("sessions", "utm_content", "String DEFAULT ''"),
    ("sessions", "utm_term", "String DEFAULT ''"),
    ("sessions", "source", "String DEFAULT ''"),
    ("sessions", "channel", "{lc_string} DEFAULT ''"),
    ("sessions", "device", "{lc_string} DEFAULT ''"),
    ("sessions", "browser", "{lc_string} DEFAULT ''"),
    ("sessions", "browser_version", "{lc_string} DEFAULT ''"),
    ("sessions", "os", "{lc_string} DEFAULT ''"),
    ("sessions", "os_version", "{lc_string} DEFAULT ''"),
    ("sessions", "country", "{lc_string} DEFAULT ''"),
    ("sessions", "region", "String DEFAULT ''"),
    ("sessions", "city", "String DEFAULT ''"),
];

/// The statements that create `database` and every table in it, for a server of `version`.
/// All are idempotent (`IF NOT EXISTS`), so every component may run them at start.
pub fn statements(database: &str, version: ServerVersion) -> Vec<String> {
    statements_with_policy(database, version, None)
}

/// [`statements`], the tables on `storage_policy` (a policy of the server's configuration,
/// e.g. hot SSD, warm HDD and cold object storage volumes) where the server has them. A
/// table keeps the policy it was created with: ClickHouse changes it only to a policy that
/// contains the old one's disks (`ALTER TABLE … MODIFY SETTING storage_policy`).
pub fn statements_with_policy(
    database: &str,
    version: ServerVersion,
    storage_policy: Option<&str>,
) -> Vec<String> {
    let settings = match storage_policy {
        Some(policy) if version.has_ttl() => format!("\nSETTINGS storage_policy = '{policy}'"),
        _ => String::new(),
    };
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS {database}")];
    statements.extend(TABLES.iter().map(|(_, template)| {
        format!(
            "{}{settings}",
            render(template, database, version).trim_end()
        )
    }));
    statements
}

/// Fills the placeholders of one template.
pub fn render(template: &str, database: &str, version: ServerVersion) -> String {
    let lc_string = if version.has_low_cardinality() {
        "LowCardinality(String)"
    } else {
        "String"
    };
    template
        .replace("{database}", database)
        .replace("{lc_string}", lc_string)
}

/// The `ORDER BY` key of a table template, e.g. `(tenant, event_time, message_id)`.
pub fn sort_key(template: &str) -> Option<&str> {
    template
        .lines()
        .find_map(|line| line.trim().strip_prefix("ORDER BY "))
        .map(str::trim)
}

/// True when `name` is safe to splice into DDL as a database name. Database names come from
/// configuration, not from users, but a typo should fail loudly rather than produce odd SQL.
pub fn is_valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: ServerVersion = ServerVersion {
        major: 18,
        minor: 16,
    };
    const NEW: ServerVersion = ServerVersion {
        major: 24,
        minor: 8,
    };

    #[test]
    fn old_servers_get_no_modern_types() {
        for statement in statements("db", OLD) {
            assert!(!statement.contains("LowCardinality"), "{statement}");
            assert!(
                !statement.contains('{'),
                "unfilled placeholder in {statement}"
            );
        }
        assert!(
            statements("db", NEW)
                .iter()
                .any(|s| s.contains("LowCardinality"))
        );
    }

    /// A DDL file that is not registered is never created, and its sink fails forever.
    #[test]
    fn every_sql_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(
                TABLES.iter().any(|(_, template)| *template == text),
                "{text} is not in TABLES"
            );
        }
        for (name, template) in TABLES {
            assert!(
                template.contains(&format!("{{database}}.{name}\n")),
                "{name} creates another table"
            );
        }
    }

    /// A new table gets an added column from its template, an old one from the ALTER: both
    /// must say the same.
    #[test]
    fn added_columns_are_in_their_templates() {
        for (table, column, kind) in ADDED_COLUMNS {
            let (_, template) = TABLES.iter().find(|(name, _)| name == table).unwrap();
            let line = format!("    {column} {kind}");
            assert!(
                template.lines().any(|l| l.trim_end_matches(',') == line),
                "{table}.{column} {kind}"
            );
        }
    }

    #[test]
    fn every_table_has_a_sort_key() {
        for (name, template) in TABLES {
            assert!(sort_key(template).is_some(), "{name}");
        }
        assert_eq!(
            sort_key(include_str!("../sql/events.sql")),
            Some("(tenant, event_time, message_id)")
        );
    }

    #[test]
    fn identifiers() {
        assert!(is_valid_identifier("clickstream_test_1"));
        assert!(!is_valid_identifier("a;DROP"));
        assert!(!is_valid_identifier("1abc"));
        assert!(!is_valid_identifier(""));
    }
}
