//! The tenant-scoped views Ask exposes, derived from the DDL in `schemas/sql` so the model's
//! schema can never drift from the tables.
//!
//! A view is a table minus the columns the gateway owns (`tenant`, the row versions and
//! tombstones, the stored-late flag, the client IP) and minus `Nested` columns, whose dotted
//! names the guard does not accept. The gateway substitutes each view reference with
//! [`View::scoped_subquery`], which is where the tenant filter lives.

use std::sync::LazyLock;

/// One view: its name, its columns `(name, ClickHouse type)`, and the rows it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The name the model writes, e.g. `events`.
    pub name: &'static str,
    /// Visible columns, in DDL order.
    pub columns: Vec<(String, String)>,
    /// Columns of the table the view hides.
    pub hidden: Vec<String>,
    /// The rows of the tenant that count: what the dashboard counts too.
    keep: String,
    /// What each row is, for the prompt.
    pub description: &'static str,
}

/// Columns the gateway owns; never visible through Ask.
/// (`is_bot` and `non_interactive` are always 0 in the events view.)
const HIDDEN: [&str; 7] = [
    "tenant",
    "version",
    "deleted",
    "late",
    "ip",
    "is_bot",
    "non_interactive",
];

/// Every view, in the order the prompt lists them.
pub static VIEWS: LazyLock<Vec<View>> = LazyLock::new(|| {
    vec![
        view(
            "events",
            // Interactions only: what the dashboard counts.
            format!("late = 0 AND {}", schemas::definitions::interaction_sql()),
            "one row per event (page, screen, track, identify, alias, group), bots' events and \
             pages' own pings left out; event_time is UTC; person_id is the stitched person; visitors are anonymous_id, or user_id when there is none",
        ),
        view(
            "sessions",
            "deleted = 0".into(),
            "one row per session (30 minutes of inactivity ends one); start_time is UTC; \
             duration_ms in milliseconds; is_bounce is 1 for a bounce",
        ),
    ]
});

fn view(name: &'static str, keep: String, description: &'static str) -> View {
    let template = schemas::ddl::TABLES
        .iter()
        .find(|(table, _)| *table == name)
        .map(|(_, template)| *template)
        .unwrap_or_default();
    let mut columns = Vec::new();
    let mut hidden = Vec::new();
    for (column, column_type) in table_columns(template) {
        if HIDDEN.contains(&column.as_str()) || column_type.starts_with("Nested") {
            hidden.push(column);
        } else {
            columns.push((column, column_type));
        }
    }
    View {
        name,
        columns,
        hidden,
        keep,
        description,
    }
}

/// The `(name, type)` pairs of a `CREATE TABLE` template's column list: the lines between the
/// line that opens the list and the one that closes it, SQL comments skipped.
fn table_columns(template: &str) -> Vec<(String, String)> {
    template
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "(")
        .skip(1)
        .take_while(|line| *line != ")")
        .filter(|line| !line.is_empty() && !line.starts_with("--"))
        .filter_map(|line| {
            let line = line.trim_end_matches(',');
            let (name, column_type) = line.split_once(' ')?;
            let column_type = column_type.replace("{lc_string}", "String");
            // `String DEFAULT ''` is a `String` to whoever reads the view.
            let column_type = column_type.split(" DEFAULT ").next().unwrap_or_default();
            Some((name.to_owned(), column_type.trim().to_owned()))
        })
        .collect()
}

impl View {
    /// The view of `name`, compared as ClickHouse compares table names (exactly).
    pub fn named(name: &str) -> Option<&'static View> {
        VIEWS.iter().find(|view| view.name == name)
    }

    /// The subquery that replaces a reference to this view: the visible columns of the
    /// tenant's final rows. `FINAL` collapses the replaced versions the engine writes.
    pub fn scoped_subquery(&self, database: &str, tenant: &str) -> String {
        let columns: Vec<&str> = self.columns.iter().map(|(name, _)| name.as_str()).collect();
        format!(
            "(SELECT {} FROM {database}.{} FINAL WHERE tenant = {} AND {})",
            columns.join(", "),
            self.name,
            string_literal(tenant),
            self.keep
        )
    }

    /// `name(column Type, ...)`, as the prompt shows it.
    pub fn signature(&self) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|(name, column_type)| format!("{name} {column_type}"))
            .collect();
        format!("{}({})", self.name, columns.join(", "))
    }
}

/// Whether `name` is a visible column of any view (compared case-insensitively, so that
/// `TENANT` and `tenant` are judged alike).
pub fn is_view_column(name: &str) -> bool {
    VIEWS.iter().any(|view| {
        view.columns
            .iter()
            .any(|(column, _)| column.eq_ignore_ascii_case(name))
    })
}

/// Whether `name` is a column the gateway hides.
pub fn is_hidden_column(name: &str) -> bool {
    VIEWS.iter().any(|view| {
        view.hidden
            .iter()
            .any(|column| column.eq_ignore_ascii_case(name))
    })
}

/// A ClickHouse string literal of `text`. ClickHouse honours backslash escapes, so both the
/// backslash and the quote are escaped.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_come_from_the_ddl_without_the_gateways_columns() {
        let events = View::named("events").unwrap();
        let names: Vec<&str> = events.columns.iter().map(|(n, _)| n.as_str()).collect();
        for expected in ["message_id", "type", "path", "person_id", "event_time"] {
            assert!(names.contains(&expected), "{names:?}");
        }
        for hidden in ["tenant", "version", "late", "ip", "properties"] {
            assert!(!names.contains(&hidden), "{hidden} visible");
        }
        assert!(
            events
                .columns
                .iter()
                .all(|(_, t)| !t.contains('{') && !t.is_empty())
        );
        let sessions = View::named("sessions").unwrap();
        assert!(sessions.columns.iter().any(|(n, _)| n == "is_bounce"));
        assert!(!sessions.columns.iter().any(|(n, _)| n == "deleted"));
        assert!(is_hidden_column("TENANT") && is_view_column("Path"));
    }

    #[test]
    fn the_tenant_is_quoted_for_clickhouse() {
        assert_eq!(string_literal(r"a'b\"), r"'a\'b\\'");
        let subquery = View::named("sessions")
            .unwrap()
            .scoped_subquery("db", "x'y");
        assert!(
            subquery.contains(r"tenant = 'x\'y' AND deleted = 0"),
            "{subquery}"
        );
        assert!(subquery.starts_with("(SELECT session_id, "), "{subquery}");
    }
}
