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
    /// The tenant's names ([`names`]).
    pub names: String,
}

/// The tenant's names a typed query may use, most frequent first, a few of each.
pub fn names(vocabulary: &super::vocabulary::Vocabulary) -> String {
    let quoted = |values: &[String], most: usize| -> String {
        values
            .iter()
            .take(most)
            .map(|value| format!("{value:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![
        format!("- events (event:name): {}", quoted(&vocabulary.events, 40)),
        format!("- pages (event:page): {}", quoted(&vocabulary.pages, 40)),
        format!(
            "- goals (event:goal): {}",
            vocabulary
                .goals
                .iter()
                .map(|goal| format!("{:?}", goal.label()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    for (key, values) in &vocabulary.properties {
        lines.push(format!("- event:props:{key}: {}", quoted(values, 15)));
    }
    for (attribute, values) in &vocabulary.visits {
        if !values.is_empty() && attribute.name() != "entry_page" {
            lines.push(format!(
                "- visit:{}: {}",
                attribute.name(),
                quoted(values, 20)
            ));
        }
    }
    lines.join("\n")
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
        "You translate questions about a product's analytics into a query.\n\
         First choice: a typed query of the query model, in one ```json block, one of:\n\
         {{\"query\": <a Plausible Stats API v2 body without site_id: metrics (visitors, persons, visits, pageviews, views_per_visit, bounce_rate, visit_duration, events, percentage, conversion_rate), date_range (\"day\", \"7d\", \"30d\", \"month\", \"6mo\", \"year\", \"all\", or [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]), dimensions (event:page, event:name, event:goal, event:props:<key>, visit:source, visit:channel, visit:utm_source, visit:utm_medium, visit:utm_campaign, visit:device, visit:browser, visit:os, visit:country, visit:region, visit:city, visit:entry_page, visit:exit_page, time:hour, time:day, time:week, time:month), filters ([[\"is\", \"visit:country\", [\"DE\"]]], operators is, is_not, contains, contains_not, has_done, has_not_done), include.comparisons ({{\"mode\": \"previous_period\"}}), pagination ({{\"limit\": 10}})>}}\n\
         {{\"funnel\": {{\"steps\": [\"page:/pricing\", \"event:Signed Up\"], \"window\": 86400, \"date_range\": \"30d\"}}}}\n\
         {{\"retention\": {{\"date_range\": [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]}}}}\n\
         {{\"person\": {{\"id\": \"<userId or anonymousId>\", \"date_range\": \"7d\"}}}}\n\
         Use only these names of this site (a name not listed is not in the data):\n{names}\n\n\
         Only when a typed query cannot express the question: one ClickHouse SELECT statement in one ```sql block, over the views below. If neither can answer it, answer with exactly: CANNOT_ANSWER\n\n\
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
        names = facts.names,
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
            names: "- events (event:name): \"Signed Up\"".into(),
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
        assert!(prompt.contains("typed query") && prompt.contains("\"Signed Up\""));
        let modern = system_prompt(&PromptFacts {
            server_version: ServerVersion {
                major: 24,
                minor: 8,
            },
            today: "2026-11-30".into(),
            time_zone: "UTC",
            complete_until: None,
            names: String::new(),
        });
        assert!(!modern.contains("no window functions"), "{modern}");
    }
}
