//! The instructions a model gets: the views' schema generated from the DDL, the dialect of
//! the server detected at start, the date, the tenant's time zone, how complete the data is,
//! and worked examples. The prompt guides the model; it protects nothing (the guard does).

use schemas::definitions::{activity_sql, page_view_location_sql, page_view_sql};

use schemas::version::ServerVersion;

use super::views::VIEWS;

/// What the prompt states about the moment and the tenant.
#[derive(Debug, Clone)]
pub struct PromptFacts<'a> {
    /// The server's version, detected at start.
    pub server_version: ServerVersion,
    /// Today in the tenant's time zone, `YYYY-MM-DD`.
    pub today: String,
    /// IANA name, e.g. `Europe/Berlin`.
    pub time_zone: &'a str,
    /// "Complete up to", RFC 3339 UTC, if the engine has recorded progress.
    pub complete_until: Option<String>,
}

/// Dialect notes for a server version: what 18.16 lacks that models tend to write.
fn dialect_notes(server_version: ServerVersion) -> String {
    let mut notes = vec![
        "Write ClickHouse SQL: count(), uniqExact(x), countIf(cond), sumIf(x, cond), toDate(t, 'Zone'), toStartOfHour(t), toMonday(d), today(), INTERVAL 7 DAY.",
        "No table functions, no system tables, no SETTINGS, no FORMAT, no LIMIT BY; IN takes literal values or a subquery.",
        "String literals use single quotes; never use backslashes.",
        "Never name an alias like a column of a view (e.g. not `AS path`, `AS events`); use names such as `views`, `visitors_count`.",
    ];
    if !server_version.has_modern_select() {
        notes.extend([
            "This server is an old ClickHouse: no `WITH name AS (SELECT ...)` subquery CTEs (use subqueries in FROM), at most one JOIN per SELECT, no window functions (no OVER), no CAST(x AS T) (use toString, toUInt64, toFloat64).",
        ]);
    }
    let mut text = notes.join("\n- ");
    text.push_str(&format!(
        "\n- Use only these functions: {}.",
        super::guard::FUNCTIONS.join(", ")
    ));
    text
}

/// The system prompt.
pub fn system_prompt(facts: &PromptFacts<'_>) -> String {
    let schema: Vec<String> = VIEWS
        .iter()
        .map(|view| format!("- {} -- {}", view.signature(), view.description))
        .collect();
    let complete = facts.complete_until.as_deref().map_or_else(
        || "No data has been processed yet.".to_owned(),
        |until| format!("Data is complete up to {until}; later events may still be arriving."),
    );
    format!(
        "You translate questions about a product's analytics into one ClickHouse SELECT statement.\n\
         Answer with the SQL only, in one ```sql block. If the question cannot be answered from these views, answer with exactly: CANNOT_ANSWER\n\n\
         Views (already limited to this customer's data; there are no other tables):\n{schema}\n\n\
         Definitions:\n\
         - a page view is a row of events with {page_view}; its location is {location}\n\
         - activity is {activity}; count visitors as uniqExact(if(anonymous_id != '', anonymous_id, user_id)) over activity\n\
         - persons are distinct person_id; a bounce is a session with is_bounce = 1\n\n\
         Dialect ({version}):\n- {notes}\n\n\
         Today is {today} in the customer's time zone {tz}. Times are stored in UTC: group by local day with toDate(event_time, '{tz}').\n\
         {complete}\n\n\
         Examples:\n\
         Q: How many page views were there yesterday?\n\
         ```sql\nSELECT countIf({page_view}) AS views FROM events WHERE toDate(event_time, '{tz}') = yesterday()\n```\n\
         Q: Top 5 pages in the last 7 days\n\
         ```sql\nSELECT {location} AS page, count() AS views FROM events WHERE {page_view} AND event_time >= now() - INTERVAL 7 DAY GROUP BY page ORDER BY views DESC LIMIT 5\n```\n\
         Q: Bounce rate per day this month\n\
         ```sql\nSELECT toDate(start_time, '{tz}') AS day, round(100 * avg(is_bounce), 1) AS bounce_rate FROM sessions WHERE toDate(start_time, '{tz}') >= toStartOfMonth(today()) GROUP BY day ORDER BY day\n```\n\
         Q: How many people signed up but never purchased last month?\n\
         ```sql\nSELECT count() AS people FROM (SELECT person_id, max(name = 'Signed Up') AS signed_up, max(name = 'Purchased') AS purchased FROM events WHERE type = 'track' AND toStartOfMonth(toDate(event_time, '{tz}')) = toStartOfMonth(today()) - INTERVAL 1 MONTH GROUP BY person_id) WHERE signed_up = 1 AND purchased = 0\n```",
        schema = schema.join("\n"),
        page_view = page_view_sql(),
        location = page_view_location_sql(),
        activity = activity_sql(),
        version = facts.server_version,
        notes = dialect_notes(facts.server_version),
        today = facts.today,
        tz = facts.time_zone,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_carries_the_generated_schema_and_the_old_dialect() {
        let prompt = system_prompt(&PromptFacts {
            server_version: ServerVersion::OLDEST,
            today: "2026-11-30".into(),
            time_zone: "Europe/Berlin",
            complete_until: Some("2026-11-30T12:00:00.000Z".into()),
        });
        assert!(
            prompt.contains("events(message_id String, type String"),
            "{prompt}"
        );
        assert!(prompt.contains("sessions(session_id String"));
        assert!(!prompt.contains("tenant"));
        assert!(prompt.contains("no window functions"));
        assert!(prompt.contains("Today is 2026-11-30"));
        assert!(prompt.contains("complete up to 2026-11-30T12:00:00.000Z"));
        let modern = system_prompt(&PromptFacts {
            server_version: ServerVersion {
                major: 24,
                minor: 8,
            },
            today: "2026-11-30".into(),
            time_zone: "UTC",
            complete_until: None,
        });
        assert!(!modern.contains("no window functions"), "{modern}");
    }
}
