//! The answer as the dashboard shows it: the question, the SQL that ran, the rows, a summary
//! that states the numbers, a chart hint, follow-up questions and the "complete up to" mark.

use serde::Serialize;
use serde_json::Value;

use super::run::{Column, ErrorClass};
use super::translator::{SUGGESTIONS, Shape, Translation};
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
    /// The SQL that ran, over the views (the tenant filter is the gateway's).
    pub sql: Option<String>,
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
            columns: Vec::new(),
            rows: Vec::new(),
            summary: String::new(),
            chart: Chart::Table,
            follow_ups: Vec::new(),
            complete_until_ms: None,
            complete_until: None,
            error: None,
            note: None,
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

    /// The translator's statement and what became of it.
    pub(super) fn from_translation(
        question: &str,
        translation: Translation,
        outcome: Result<Checked, Failure>,
    ) -> Answer {
        let author = &super::OFFLINE;
        let checked = match outcome {
            Ok(checked) => checked,
            Err(failure) => return Answer::failed(question, &translation.sql, failure, author),
        };
        let mut answer = Answer::empty(question, Outcome::Answered, author);
        let period = translation
            .period
            .as_ref()
            .map_or_else(|| "all time".to_owned(), |period| period.describe());
        answer.summary = shaped_summary(&translation, &period, &checked.table.rows);
        answer.chart = match translation.shape {
            Shape::Series => Chart::Line,
            Shape::Top | Shape::Comparison | Shape::Funnel(_) => Chart::Bar,
            Shape::Totals | Shape::Retention | Shape::Activity => Chart::Table,
        };
        answer.follow_ups = follow_ups(&translation, &period);
        if !translation.notes.is_empty() {
            answer.note = Some(translation.notes.join(" "));
        }
        answer.title = Some(translation.title);
        answer.period = Some(period);
        answer.sql = Some(checked.sql);
        answer.columns = checked.table.columns;
        answer.rows = checked.table.rows;
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

fn shaped_summary(translation: &Translation, period: &str, rows: &[Vec<Value>]) -> String {
    let title = &translation.title;
    match &translation.shape {
        Shape::Totals => format!("{} in {period}: {}.", capitalize(title), cell(rows, 0, 0)),
        Shape::Comparison => {
            let (now, before) = (number_at(rows, 0), number_at(rows, 1));
            let change = if before > 0.0 {
                format!(" ({:+.1} %)", (now - before) / before * 100.0)
            } else {
                String::new()
            };
            format!(
                "{}: {} in {period}, {} in the previous period{change}.",
                capitalize(title.split(':').next().unwrap_or(title)),
                cell(rows, 0, 0),
                cell(rows, 0, 1)
            )
        }
        Shape::Top if rows.is_empty() => format!("No {title} in {period}."),
        Shape::Top => {
            let leaders: Vec<String> = (0..rows.len().min(3))
                .map(|i| format!("{} ({})", cell(rows, i, 0), cell(rows, i, 1)))
                .collect();
            format!("{} in {period}: {}.", capitalize(title), leaders.join(", "))
        }
        Shape::Series if rows.is_empty() => format!("No {title} in {period}."),
        Shape::Series => {
            let value = |i: usize| rows[i].get(1).and_then(Value::as_f64).unwrap_or(0.0);
            let peak = (0..rows.len())
                .max_by(|a, b| value(*a).total_cmp(&value(*b)))
                .unwrap_or(0);
            let low = (0..rows.len())
                .min_by(|a, b| value(*a).total_cmp(&value(*b)))
                .unwrap_or(0);
            format!(
                "{} in {period}: {} with data; the highest is {} ({}), the lowest {} ({}).",
                capitalize(title),
                plural(rows.len(), title.rsplit(' ').next().unwrap_or("bucket")),
                cell(rows, peak, 1),
                cell(rows, peak, 0),
                cell(rows, low, 1),
                cell(rows, low, 0)
            )
        }
        Shape::Funnel(steps) => {
            let parts: Vec<String> = steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    let name = match step {
                        super::translator::Target::Event(name)
                        | super::translator::Target::Page(name) => name,
                    };
                    format!("{} {name}", cell(rows, 0, i))
                })
                .collect();
            format!(
                "Persons reaching each step within a day, in {period}: {}.",
                parts.join(", then ")
            )
        }
        Shape::Retention if rows.is_empty() => format!("No activity in {period}."),
        Shape::Retention => {
            let cohorts = rows
                .iter()
                .filter(|row| row.get(1).and_then(Value::as_u64) == Some(0))
                .count();
            format!(
                "{cohorts} weekly cohorts in {period}; the first cohort ({}) had {} persons.",
                cell(rows, 0, 0),
                cell(rows, 0, 2)
            )
        }
        Shape::Activity if rows.is_empty() => {
            format!("No activity found for that person in {period}.")
        }
        Shape::Activity => format!(
            "{} events in {period}, from {} to {}.",
            rows.len(),
            cell(rows, 0, 0),
            cell(rows, rows.len() - 1, 0)
        ),
    }
}

fn plural(count: usize, unit: &str) -> String {
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

fn number_at(rows: &[Vec<Value>], column: usize) -> f64 {
    rows.first()
        .and_then(|row| row.get(column))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn follow_ups(translation: &Translation, period: &str) -> Vec<String> {
    let named = period.split(" (").next().unwrap_or(period);
    let in_named = if named.starts_with("the ") {
        format!("in {named}")
    } else {
        named.to_owned()
    };
    let named = in_named.as_str();
    let metric = translation
        .title
        .split(':')
        .next()
        .unwrap_or(&translation.title);
    match translation.shape {
        Shape::Totals | Shape::Comparison => vec![
            format!("{metric} per day {named}"),
            format!("Compare {metric} with the previous period"),
            format!("Top pages {named}"),
        ],
        Shape::Series => vec![
            format!(
                "Compare {} with the previous period",
                metric.split(" per ").next().unwrap_or(metric)
            ),
            format!("Top pages {named}"),
            format!("Bounce rate {named}"),
        ],
        _ => vec![
            format!("Unique visitors {named}"),
            format!("Top referrers {named}"),
            format!("Sessions per day {named}"),
        ],
    }
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
