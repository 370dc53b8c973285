//! The answer as the dashboard shows it: the question, the SQL that ran, the rows, a summary
//! that states the numbers, a chart hint, follow-up questions and the "complete up to" mark.

use serde::Serialize;
use serde_json::Value;

use super::run::{Column, ErrorClass};
use super::translator::{SUGGESTIONS, Translation};
use super::typed::{ExecuteError, Executed, TypedQuery};
use super::{Author, Checked, Failure};

/// How a question ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Rows and a summary.
    Answered,
    /// Neither the translator nor the model could turn the question into a query.
    CannotAnswer,
    /// The guard refused the statement (after the model's retry).
    Refused,
    /// ClickHouse refused the statement (after the model's retry).
    Failed,
}

impl Outcome {
    /// The name in `ask_log.outcome` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::CannotAnswer => "cannot_answer",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// How the dashboard should draw the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Chart {
    /// First column on the x axis (time), the others as lines.
    Line,
    /// First column as categories, the second as bars.
    Bar,
    /// Just the table.
    Table,
}

/// The answer to one question.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Answer {
    /// The question as asked.
    pub question: String,
    /// How it ended.
    pub outcome: Outcome,
    /// `offline`, `anthropic` or `openai`.
    pub provider: &'static str,
    /// The model's name; empty for the offline translator.
    pub model: String,
    /// What the rows are, e.g. "page views per day".
    pub title: Option<String>,
    /// The period, e.g. "the last 7 days (2026-11-24 to 2026-11-30)".
    pub period: Option<String>,
    /// The SQL that ran, over the views (the tenant filter is the gateway's): a model's
    /// statement; the offline translator writes none.
    pub sql: Option<String>,
    /// The typed query of the query model that answered (`{"query": <v2 body>}`,
    /// `{"funnel": …}`, `{"retention": …}`, `{"person": …}`): the same numbers as the
    /// dashboard and `/api/v2/query` give for it.
    pub query: Option<TypedQuery>,
    /// The definitions the numbers follow: time zone, session rule, period.
    pub definitions: Option<String>,
    /// Result columns.
    pub columns: Vec<Column>,
    /// Result rows.
    pub rows: Vec<Vec<Value>>,
    /// The answer in words, numbers included.
    pub summary: String,
    /// How to draw it.
    pub chart: Chart,
    /// Questions to ask next (the dashboard makes them clickable).
    pub follow_ups: Vec<String>,
    /// Everything received before this instant (Unix ms) is in the data.
    pub complete_until_ms: Option<i64>,
    /// The same, RFC 3339 UTC.
    pub complete_until: Option<String>,
    /// Why it was refused or failed, in words safe to show (never ClickHouse's text).
    pub error: Option<String>,
    /// A remark on how it was answered (e.g. the model's budget is spent).
    pub note: Option<String>,
    /// The translator's own remarks (defaults it applied, names it read loosely): what the
    /// translation cache keeps with the typed query.
    #[serde(skip)]
    pub translation_notes: Vec<String>,
}

impl Answer {
    fn empty(question: &str, outcome: Outcome, author: &Author) -> Answer {
        Answer {
            question: question.to_owned(),
            outcome,
            provider: author.provider,
            model: author.model.clone(),
            title: None,
            period: None,
            sql: None,
            query: None,
            definitions: None,
            columns: Vec::new(),
            rows: Vec::new(),
            summary: String::new(),
            chart: Chart::Table,
            follow_ups: Vec::new(),
            complete_until_ms: None,
            complete_until: None,
            error: None,
            note: None,
            translation_notes: Vec::new(),
        }
    }

    /// No query could be written: says why and offers questions that can be answered.
    pub(super) fn cannot_answer(question: &str, reason: &str, author: &Author) -> Answer {
        let mut answer = Answer::empty(question, Outcome::CannotAnswer, author);
        answer.summary = reason.to_owned();
        answer.follow_ups = SUGGESTIONS.iter().map(|s| (*s).to_owned()).collect();
        answer
    }

    fn failed(question: &str, sql: &str, failure: Failure, author: &Author) -> Answer {
        let (outcome, error) = match failure {
            Failure::Refused(reason) => (
                Outcome::Refused,
                format!("The query was refused: {reason}."),
            ),
            Failure::Query { class, .. } => (Outcome::Failed, failure_text(class)),
            Failure::Unavailable(_) => (
                Outcome::Failed,
                "The analytics store is unavailable; try again shortly.".to_owned(),
            ),
        };
        let mut answer = Answer::empty(question, outcome, author);
        answer.sql = Some(sql.to_owned());
        answer.summary = error.clone();
        answer.error = Some(error);
        answer.follow_ups = SUGGESTIONS
            .iter()
            .take(3)
            .map(|s| (*s).to_owned())
            .collect();
        answer
    }

    /// The model's statement and what became of it.
    pub(super) fn from_model(
        question: &str,
        sql: &str,
        outcome: Result<Checked, Failure>,
        author: &Author,
    ) -> Answer {
        let checked = match outcome {
            Ok(checked) => checked,
            Err(failure) => return Answer::failed(question, sql, failure, author),
        };
        let mut answer = Answer::empty(question, Outcome::Answered, author);
        answer.chart = chart_of(&checked.table.columns, checked.table.rows.len());
        answer.summary = generic_summary(&checked.table.columns, &checked.table.rows);
        answer.sql = Some(checked.sql);
        answer.columns = checked.table.columns;
        answer.rows = checked.table.rows;
        answer.follow_ups = vec![
            "Show this per day".to_owned(),
            "Compare with the previous period".to_owned(),
            "What were the top pages in the same period?".to_owned(),
        ];
        answer
    }

    /// A typed query (the translator's or a model's) and what it returned.
    pub(super) fn from_typed(
        question: &str,
        translation: Translation,
        outcome: Result<Executed, ExecuteError>,
        zone: chrono_tz::Tz,
        author: &Author,
    ) -> Answer {
        let executed = match outcome {
            Ok(executed) => executed,
            Err(error) => {
                let mut answer = Answer::cannot_answer(question, &error.to_string(), author);
                if matches!(error, ExecuteError::Unavailable) {
                    answer.outcome = Outcome::Failed;
                    answer.error = Some(error.to_string());
                }
                answer.query = Some(translation.query);
                return answer;
            }
        };
        let mut answer = Answer::empty(question, Outcome::Answered, author);
        let period = executed.period.as_ref().map(|period| {
            if period.first == period.last {
                period.first.to_string()
            } else {
                format!("{} to {}", period.first, period.last)
            }
        });
        answer.definitions = Some(format!(
            "Days, weeks and months in {zone}; a visit (session) ends after 30 minutes without activity; a bounce is a visit with one page view and nothing else; bots left out; period {}.",
            period.as_deref().unwrap_or("as given")
        ));
        answer.summary = typed_summary(
            &translation.query,
            &executed,
            period.as_deref().unwrap_or(""),
        );
        answer.chart = match &translation.query {
            TypedQuery::Query(body) => {
                let dimensions = body
                    .get("dimensions")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let time = body
                    .get("dimensions")
                    .and_then(|d| d.get(0))
                    .and_then(Value::as_str)
                    .is_some_and(|d| d.starts_with("time"));
                match (dimensions, time) {
                    (1, true) => Chart::Line,
                    (1, false) => Chart::Bar,
                    _ => Chart::Table,
                }
            }
            TypedQuery::Funnel(_) => Chart::Bar,
            TypedQuery::Retention(_) | TypedQuery::Person(_) => Chart::Table,
        };
        answer.follow_ups = follow_ups(&translation.query, period.as_deref());
        if !translation.notes.is_empty() {
            answer.note = Some(translation.notes.join(" "));
        }
        answer.translation_notes = translation.notes;
        answer.title = Some(title_of(&translation.query));
        answer.period = period;
        answer.columns = columns_of(&executed);
        answer.rows = executed.rows;
        answer.query = Some(translation.query);
        answer
    }

    /// States how complete the data is, in the answer and its summary.
    pub(super) fn set_complete_until(&mut self, complete_until_ms: Option<i64>) {
        self.complete_until_ms = complete_until_ms;
        self.complete_until = complete_until_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        if self.outcome == Outcome::Answered {
            let mark = self.complete_until.as_deref().map_or_else(
                || " No events have been processed yet.".to_owned(),
                |until| format!(" Data is complete up to {until}."),
            );
            self.summary.push_str(&mark);
        }
    }

    /// Adds a remark in front of any the answer has.
    pub(super) fn add_note(&mut self, note: String) {
        self.note = Some(match self.note.take() {
            Some(existing) => format!("{note} {existing}"),
            None => note,
        });
    }

    /// What `ask_log.detail` records: the error or the note.
    pub(super) fn detail_for_log(&self) -> String {
        self.error
            .clone()
            .or_else(|| self.note.clone())
            .unwrap_or_default()
    }
}

fn failure_text(class: ErrorClass) -> String {
    format!(
        "The query could not run: {}. Try a narrower question (a shorter period, fewer groups).",
        class.describe()
    )
}

fn chart_of(columns: &[Column], rows: usize) -> Chart {
    let numeric = |c: &Column| {
        let t = c.column_type.trim_start_matches("Nullable(");
        t.starts_with("UInt")
            || t.starts_with("Int")
            || t.starts_with("Float")
            || t.starts_with("Decimal")
    };
    match columns {
        [first, rest @ ..] if rows >= 2 && !rest.is_empty() && rest.iter().all(numeric) => {
            if first.column_type.starts_with("Date") {
                Chart::Line
            } else if rest.len() == 1 {
                Chart::Bar
            } else {
                Chart::Table
            }
        }
        _ => Chart::Table,
    }
}

/// Numbers with thousands separators; fractions as ClickHouse gave them.
pub fn format_value(value: &Value) -> String {
    match value {
        Value::Number(number) => match number.as_u64() {
            Some(n) => {
                let digits = n.to_string();
                let mut out = String::new();
                for (i, c) in digits.chars().enumerate() {
                    if i > 0 && (digits.len() - i) % 3 == 0 {
                        out.push(',');
                    }
                    out.push(c);
                }
                out
            }
            None => number.to_string(),
        },
        Value::String(text) => text.clone(),
        Value::Null => "none".to_owned(),
        other => other.to_string(),
    }
}

fn generic_summary(columns: &[Column], rows: &[Vec<Value>]) -> String {
    match rows {
        [] => "The query returned no rows.".to_owned(),
        [row] => {
            let parts: Vec<String> = columns
                .iter()
                .zip(row)
                .map(|(column, value)| format!("{}: {}", column.name, format_value(value)))
                .collect();
            format!("{}.", parts.join(", "))
        }
        [first, ..] => {
            let parts: Vec<String> = columns
                .iter()
                .zip(first)
                .map(|(column, value)| format!("{} {}", column.name, format_value(value)))
                .collect();
            format!("{} rows; the first: {}.", rows.len(), parts.join(", "))
        }
    }
}

fn cell(rows: &[Vec<Value>], row: usize, column: usize) -> String {
    rows.get(row)
        .and_then(|r| r.get(column))
        .map_or_else(|| "none".to_owned(), format_value)
}

/// The answer in words: every number of a short answer, the first rows of a long one.
fn typed_summary(query: &TypedQuery, executed: &Executed, period: &str) -> String {
    let rows = &executed.rows;
    let period = if period.is_empty() {
        String::new()
    } else {
        format!(" ({period})")
    };
    match query {
        TypedQuery::Query(_) if rows.is_empty() => format!("Nothing matched{period}."),
        TypedQuery::Query(_) if rows.len() == 1 => {
            let parts: Vec<String> = executed
                .columns
                .iter()
                .zip(&rows[0])
                .map(|(column, value)| {
                    format!("{}: {}", column.replace('_', " "), format_value(value))
                })
                .collect();
            format!("{}{period}.", capitalize(&parts.join(", ")))
        }
        TypedQuery::Query(_) => {
            let shown: Vec<String> = rows
                .iter()
                .take(3)
                .map(|row| {
                    let cells: Vec<String> = row.iter().map(format_value).collect();
                    cells.join(" ")
                })
                .collect();
            format!(
                "{} rows{period}; the first: {}.",
                rows.len(),
                shown.join("; ")
            )
        }
        TypedQuery::Funnel(_) => {
            let parts: Vec<String> = rows
                .iter()
                .map(|row| {
                    format!(
                        "{} {}",
                        cell(std::slice::from_ref(row), 0, 2),
                        cell(std::slice::from_ref(row), 0, 1)
                    )
                })
                .collect();
            format!(
                "Persons reaching each step in order{period}: {}.",
                parts.join(", then ")
            )
        }
        TypedQuery::Retention(_) if rows.is_empty() => format!("No activity{period}."),
        TypedQuery::Retention(_) => format!(
            "{} weekly cohorts{period}; the first ({}) had {} persons.",
            rows.len(),
            cell(rows, 0, 0),
            cell(rows, 0, 1)
        ),
        TypedQuery::Person(spec) if rows.is_empty() => {
            format!("No sessions of {}{period}.", spec.id)
        }
        TypedQuery::Person(spec) => format!(
            "{} of {}{period}, the latest starting {}.",
            plural(rows.len(), "session"),
            spec.id,
            cell(rows, 0, 0)
        ),
    }
}

/// What the rows are, e.g. "visitors, bounce rate by visit:country".
fn title_of(query: &TypedQuery) -> String {
    match query {
        TypedQuery::Query(body) => {
            let names = |key: &str| -> Vec<String> {
                crate::json_strings(body.get(key).unwrap_or(&Value::Null))
                    .iter()
                    .map(|name| name.replace('_', " "))
                    .collect()
            };
            let (metrics, dimensions) = (names("metrics"), names("dimensions"));
            if dimensions.is_empty() {
                metrics.join(", ")
            } else {
                format!("{} by {}", metrics.join(", "), dimensions.join(", "))
            }
        }
        TypedQuery::Funnel(spec) => format!("funnel: {}", spec.steps.join(" → ")),
        TypedQuery::Retention(_) => "weekly retention".to_owned(),
        TypedQuery::Person(spec) => format!("sessions of {}", spec.id),
    }
}

/// Column names and types (`Date` for a time bucket, `Float64` for numbers) for the chart.
fn columns_of(executed: &Executed) -> Vec<Column> {
    executed
        .columns
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let sample = executed
                .rows
                .iter()
                .find_map(|row| row.get(index).filter(|v| !v.is_null()));
            let column_type = if name.starts_with("time") {
                "Date"
            } else if sample.is_some_and(Value::is_number) {
                "Float64"
            } else {
                "String"
            };
            Column {
                name: name.clone(),
                column_type: column_type.to_owned(),
            }
        })
        .collect()
}

fn plural(count: usize, unit: &str) -> String {
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Questions to ask next, over the same period (in words the translator reads).
fn follow_ups(query: &TypedQuery, period: Option<&str>) -> Vec<String> {
    // The answer's period label: "2026-11-17", or "2026-11-01 to 2026-11-14".
    let when = period.map_or_else(
        || "in the last 7 days".to_owned(),
        |label| {
            if label.contains(" to ") {
                format!("from {label}")
            } else {
                format!("on {label}")
            }
        },
    );
    let metric = match query {
        TypedQuery::Query(body) => body
            .get("metrics")
            .and_then(|m| m.get(0))
            .and_then(Value::as_str)
            .map_or("visitors", |metric| match metric {
                "pageviews" => "page views",
                "bounce_rate" => "bounce rate",
                "visit_duration" => "visit duration",
                "views_per_visit" => "pages per visit",
                "conversion_rate" => "visitors",
                "percentage" => "visitors",
                other => other,
            }),
        _ => "visitors",
    };
    vec![
        format!("Top pages by {metric} {when}"),
        format!("{} per day {when}", capitalize(metric)),
        format!("{} by source {when}", capitalize(metric)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(format_value(&json!(1234567)), "1,234,567");
        assert_eq!(format_value(&json!(12.5)), "12.5");
        assert_eq!(format_value(&json!("2026-11-30")), "2026-11-30");
    }

    #[test]
    fn the_chart_follows_the_columns() {
        let column = |name: &str, t: &str| Column {
            name: name.into(),
            column_type: t.into(),
        };
        assert_eq!(
            chart_of(&[column("day", "Date"), column("views", "UInt64")], 3),
            Chart::Line
        );
        assert_eq!(
            chart_of(&[column("page", "String"), column("views", "UInt64")], 3),
            Chart::Bar
        );
        assert_eq!(chart_of(&[column("views", "UInt64")], 1), Chart::Table);
    }
}
