//! Runs a guarded statement in ClickHouse with the limits no statement may lift.
//!
//! `readonly=1` forbids writes and settings changes from the statement itself; the limits are
//! sent with it as URL parameters, which ClickHouse applies before `readonly` takes effect
//! (verified on 18.16). The result comes back as `JSONCompact`, so any shape of answer can be
//! returned without a row type.

use std::time::Duration;

use schemas::clickhouse_error::exception_code;
use serde::Deserialize;
use serde_json::Value;

/// Resource limits of one Ask statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// `max_execution_time`, seconds.
    pub max_execution_secs: u32,
    /// `max_memory_usage`, bytes.
    pub max_memory_bytes: u64,
    /// `max_result_rows` (the guard's `LIMIT` keeps answers well below it).
    pub max_result_rows: u64,
    /// `max_rows_to_read`: a cross join or a runaway scan ends here.
    pub max_rows_to_read: u64,
    /// `max_result_bytes`.
    pub max_result_bytes: u64,
    /// Statements running at once, over all tenants: each may use `max_memory_bytes`.
    pub max_concurrent: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_execution_secs: 10,
            max_memory_bytes: 1 << 30,
            max_result_rows: super::guard::MAX_ROWS,
            max_rows_to_read: 500_000_000,
            max_result_bytes: 16 << 20,
            max_concurrent: 4,
        }
    }
}

/// A column of an answer: its name and ClickHouse type.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct Column {
    /// The name, as the statement spelled it (an alias, or the expression).
    pub name: String,
    /// ClickHouse type, e.g. `UInt64`.
    #[serde(rename = "type")]
    pub column_type: String,
}

/// What a statement returned.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Table {
    /// Columns, in order.
    #[serde(rename = "meta")]
    pub columns: Vec<Column>,
    /// Rows of JSON values (numbers as numbers, dates as strings).
    #[serde(rename = "data")]
    pub rows: Vec<Vec<Value>>,
}

/// A class of ClickHouse failure the answer may name. The server's text stays in the log:
/// it can quote row values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// `max_execution_time` ran out.
    Timeout,
    /// `max_memory_usage` was reached.
    TooMuchMemory,
    /// Too many rows read or returned.
    TooManyRows,
    /// A column or function ClickHouse does not know.
    UnknownName,
    /// Arguments of the wrong type, or a value that does not convert.
    TypeMismatch,
    /// ClickHouse could not parse the statement.
    Syntax,
    /// Anything else the server refused.
    Other,
}

impl ErrorClass {
    /// The class of a ClickHouse exception code (`ErrorCodes.cpp`).
    pub fn of_code(code: u32) -> ErrorClass {
        match code {
            159 | 160 => ErrorClass::Timeout,
            241 => ErrorClass::TooMuchMemory,
            158 | 396 => ErrorClass::TooManyRows,
            46 | 47 | 60 | 16 | 10 => ErrorClass::UnknownName,
            6 | 27 | 38 | 41 | 43 | 44 | 53 | 69 | 70 | 72 | 321 | 386 => ErrorClass::TypeMismatch,
            62 => ErrorClass::Syntax,
            _ => ErrorClass::Other,
        }
    }

    /// A sentence for the answer (and for the model's retry).
    pub fn describe(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "the query took longer than the time limit",
            ErrorClass::TooMuchMemory => "the query needed more memory than allowed",
            ErrorClass::TooManyRows => "the query read or returned more rows than allowed",
            ErrorClass::UnknownName => "the query names a column or function that does not exist",
            ErrorClass::TypeMismatch => "the query mixes types that do not fit",
            ErrorClass::Syntax => "ClickHouse could not parse the query",
            ErrorClass::Other => "ClickHouse refused the query",
        }
    }
}

/// Why a statement produced no table.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// ClickHouse ran the statement and refused it.
    #[error("{}", class.describe())]
    Query {
        /// What kind of failure.
        class: ErrorClass,
        /// The server's full text: for the log only.
        detail: String,
    },
    /// ClickHouse could not be reached or answered nonsense.
    #[error("the analytics store is unavailable")]
    Unavailable(#[source] reqwest::Error),
    /// The gateway is shutting down.
    #[error("the gateway is shutting down")]
    Closed,
    /// The answer was not the JSON asked for.
    #[error("the analytics store answered in an unexpected format")]
    Malformed(#[source] serde_json::Error),
}

/// ClickHouse over HTTP, for Ask statements only.
#[derive(Debug, Clone)]
pub struct Runner {
    http: reqwest::Client,
    url: String,
    database: String,
    limits: RunLimits,
    /// Bounds the statements in flight: ClickHouse 18.16 has no per-user concurrency limit
    /// without a users.xml profile, and each statement may use `max_memory_bytes`.
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Runner {
    /// A runner for `database` at `url` (e.g. `http://127.0.0.1:18123`).
    pub fn new(url: &str, database: &str, limits: RunLimits) -> Runner {
        Runner {
            http: reqwest::Client::new(),
            url: url.trim_end_matches('/').to_owned(),
            database: database.to_owned(),
            limits,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
        }
    }

    /// The database the views read.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Runs `sql` (already guarded) read-only within the limits.
    ///
    /// # Errors
    /// [`RunError`]: ClickHouse's refusal by class, or the server being unreachable.
    pub async fn run(&self, sql: &str) -> Result<Table, RunError> {
        let _slot = self.slots.acquire().await.map_err(|_| RunError::Closed)?;
        let limits = self.limits;
        let query_id = uuid::Uuid::now_v7().to_string();
        let params = [
            ("query_id", query_id.clone()),
            ("database", self.database.clone()),
            ("readonly", "1".to_owned()),
            ("max_execution_time", limits.max_execution_secs.to_string()),
            ("max_memory_usage", limits.max_memory_bytes.to_string()),
            ("max_result_rows", limits.max_result_rows.to_string()),
            ("result_overflow_mode", "throw".to_owned()),
            ("max_rows_to_read", limits.max_rows_to_read.to_string()),
            ("max_result_bytes", limits.max_result_bytes.to_string()),
            ("max_query_size", "65536".to_owned()),
            ("max_ast_depth", "200".to_owned()),
            ("max_ast_elements", "20000".to_owned()),
            ("output_format_json_quote_64bit_integers", "0".to_owned()),
        ];
        let response = self
            .http
            .post(&self.url)
            .query(&params)
            .timeout(Duration::from_secs(
                u64::from(limits.max_execution_secs) + 5,
            ))
            .body(format!("{sql}\nFORMAT JSONCompact"))
            .send()
            .await
            .map_err(|error| {
                if error.is_timeout() {
                    self.kill(query_id);
                }
                RunError::Unavailable(error)
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(RunError::Unavailable)?;
        if !status.is_success() {
            let detail = String::from_utf8_lossy(&body).into_owned();
            let class = exception_code(&detail).map_or(ErrorClass::Other, ErrorClass::of_code);
            return Err(RunError::Query { class, detail });
        }
        serde_json::from_slice(&body).map_err(RunError::Malformed)
    }

    /// Appends one row (JSON object of column values) to `table` of the gateway's own
    /// tables (`ask_log`); never used for a statement from a question.
    ///
    /// # Errors
    /// [`RunError`] when ClickHouse refuses the row or is unreachable.
    pub async fn insert(&self, table: &str, row: &Value) -> Result<(), RunError> {
        let response = self
            .http
            .post(&self.url)
            .query(&[("database", self.database.as_str())])
            .body(format!("INSERT INTO {table} FORMAT JSONEachRow\n{row}"))
            .send()
            .await
            .map_err(RunError::Unavailable)?;
        if response.status().is_success() {
            return Ok(());
        }
        let detail = response.text().await.map_err(RunError::Unavailable)?;
        let class = exception_code(&detail).map_or(ErrorClass::Other, ErrorClass::of_code);
        Err(RunError::Query { class, detail })
    }

    /// Stops a statement the gateway gave up on: ClickHouse 18.16 goes on running a query
    /// whose HTTP client left.
    fn kill(&self, query_id: String) {
        let (http, url) = (self.http.clone(), self.url.clone());
        tokio::spawn(async move {
            let statement = format!("KILL QUERY WHERE query_id = '{query_id}' ASYNC");
            if let Err(error) = http.post(&url).body(statement).send().await {
                tracing::warn!(%error, %query_id, "could not kill an Ask statement");
            }
        });
    }

    /// `SELECT version()`: the prompt's dialect notes depend on it.
    pub async fn server_version(&self) -> Result<String, RunError> {
        let response = self
            .http
            .post(&self.url)
            .body("SELECT version()")
            .send()
            .await
            .map_err(RunError::Unavailable)?;
        let status = response.status();
        let text = response.text().await.map_err(RunError::Unavailable)?;
        if !status.is_success() {
            return Err(RunError::Query {
                class: ErrorClass::Other,
                detail: text,
            });
        }
        Ok(text.trim().to_owned())
    }
}

/// The name in ClickHouse's "Unknown identifier: x" / "Unknown function x" / "Missing
/// columns: 'x'" messages: a name from the statement itself, never a row value.
pub fn unknown_name(detail: &str) -> Option<String> {
    let code = exception_code(detail)?;
    if ErrorClass::of_code(code) != ErrorClass::UnknownName {
        return None;
    }
    [
        "Unknown identifier: ",
        "Unknown function ",
        "Missing columns: '",
    ]
    .iter()
    .find_map(|marker| detail.split_once(marker).map(|(_, rest)| rest))
    .map(|rest| {
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect::<String>()
    })
    .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_are_classified_by_code() {
        let text = "Code: 159, e.displayText() = DB::Exception: Timeout exceeded";
        assert_eq!(exception_code(text), Some(159));
        assert_eq!(ErrorClass::of_code(159), ErrorClass::Timeout);
        assert_eq!(exception_code("garbage"), None);
        assert_eq!(ErrorClass::of_code(47), ErrorClass::UnknownName);
        let unknown =
            "Code: 47, e.displayText() = DB::Exception: Unknown identifier: no_such, e.what()";
        assert_eq!(unknown_name(unknown).as_deref(), Some("no_such"));
        let mismatch = "Code: 6, e.displayText() = DB::Exception: Cannot parse string 'secret'";
        assert_eq!(unknown_name(mismatch), None);
    }
}
