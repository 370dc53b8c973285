//! The SQL guard against a corpus of hostile statements (`tests/ask/hostile.toml`), end to end
//! against real ClickHouse.
//!
//! Two databases hold the same rows of tenant `acme`; one of them also holds `globex`'s rows,
//! marked `globex-secret`. Every statement is checked for `acme`. A refused one must name its
//! reason. An accepted one runs in both databases: if the guard let anything reach beyond
//! `acme`'s rows, the two results would differ (or show the marker). After every statement the
//! server must still answer, and at the end no table may have changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use clickstream_query_gateway::ask::guard;
use clickstream_query_gateway::ask::run::{RunError, RunLimits, Runner, Table};
use serde::Deserialize;

const MARKER: &str = "globex-secret";

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    category: String,
    sql: String,
    why: String,
    repeat: Option<Repeat>,
}

#[derive(Debug, Deserialize)]
struct Repeat {
    prefix: String,
    open: String,
    middle: String,
    close: String,
    times: usize,
    suffix: String,
}

/// Categories whose every statement must be refused: nothing in them is an analytics
/// question, and a guard that let one through would be wrong even if that statement happened
/// to read nothing (system tables answer the same in both databases).
const MUST_REFUSE: [&str; 11] = [
    "alias-shadowing",
    "cte-shadowing",
    "dangerous-functions",
    "deep-nesting",
    "kill",
    "multi-statement",
    "settings-format-outfile",
    "system-tables",
    "table-functions",
    "union-join-base",
    "writes-ddl",
];

impl Case {
    /// The statement, with the corpus's database names pointed at the test's database, so
    /// that a qualified name reaches real tables if the guard lets it through.
    fn text(&self, database: &str) -> String {
        self.raw()
            .replace("clickstream.", &format!("{database}."))
            .replace("ask_two.", &format!("{database}."))
    }

    fn raw(&self) -> String {
        match &self.repeat {
            None => self.sql.clone(),
            Some(r) => format!(
                "{}{}{}{}{}",
                r.prefix,
                r.open.repeat(r.times),
                r.middle,
                r.close.repeat(r.times),
                r.suffix
            ),
        }
    }
}

/// Rows of `tenant`, some of them marked when the tenant is `globex`.
fn rows(tenant: &str, now: i64) -> (String, String) {
    let mark = |text: &str| {
        if tenant == "globex" {
            format!("{text}-{MARKER}")
        } else {
            text.to_owned()
        }
    };
    let mut events = Vec::new();
    for i in 0..40i64 {
        let time = now - 3600 * (i + 1);
        let (kind, name, path) = match i % 4 {
            0 => ("track", mark("Signed Up"), String::new()),
            1 => ("page", String::new(), mark("/pricing")),
            2 => ("page", String::new(), mark("/")),
            _ => ("screen", mark("Home"), String::new()),
        };
        events.push(format!(
            "('{tenant}', '{tenant}-m{i}', '{kind}', '{name}', '{}', '{}', toDateTime({time}), {time}000, '{path}', '{}', '{}', 0, 1)",
            mark(&format!("anon-{}", i % 7)),
            if i % 3 == 0 { mark(&format!("user-{}", i % 5)) } else { String::new() },
            mark(&format!("person-{}", i % 5)),
            mark(&format!("session-{}", i % 9)),
        ));
    }
    let mut sessions = Vec::new();
    for i in 0..9i64 {
        let start = now - 7200 * (i + 1);
        sessions.push(format!(
            "('{tenant}', '{}', '{}', toDateTime({start}), {start}000, {}, {}, '{}', 0, 1)",
            mark(&format!("session-{i}")),
            mark(&format!("person-{}", i % 5)),
            60_000 * i,
            i % 2,
            mark("https://ref.example"),
        ));
    }
    (events.join(", "), sessions.join(", "))
}

async fn load(http: &reqwest::Client, url: &str, database: &str, tenants: &[&str], now: i64) {
    for tenant in tenants {
        let (events, sessions) = rows(tenant, now);
        common::sql(http, url, &format!(
            "INSERT INTO {database}.events (tenant, message_id, type, name, anonymous_id, user_id, event_time, event_time_ms, path, person_id, session_id, late, version) VALUES {events}"
        ))
        .await;
        common::sql(http, url, &format!(
            "INSERT INTO {database}.sessions (tenant, session_id, person_id, start_time, start_ms, duration_ms, is_bounce, entry_referrer, deleted, version) VALUES {sessions}"
        ))
        .await;
        common::sql(http, url, &format!(
            "INSERT INTO {database}.identities (tenant, id_kind, id, person_id, deleted, version) VALUES ('{tenant}', 'user', 'u-{tenant}', 'person-{tenant}-{MARKER}', 0, 1)"
        ))
        .await;
    }
}

/// Every table's row count, to prove nothing was written.
async fn fingerprint(http: &reqwest::Client, url: &str, database: &str) -> String {
    let tables = common::sql(
        http,
        url,
        &format!("SELECT name FROM system.tables WHERE database = '{database}' ORDER BY name"),
    )
    .await;
    let mut print = String::new();
    for table in tables.lines() {
        let count = common::sql(
            http,
            url,
            &format!("SELECT count() FROM {database}.{table}"),
        )
        .await;
        print.push_str(&format!("{table} {count}"));
    }
    print
}

fn sorted(table: &Table) -> Vec<String> {
    let mut rows: Vec<String> = table
        .rows
        .iter()
        .map(|row| serde_json::to_string(row).unwrap())
        .collect();
    rows.sort();
    rows
}

#[derive(Debug, Default)]
struct Tally {
    cases: usize,
    refused: usize,
    ran_equal: usize,
    failed_in_clickhouse: usize,
}

/// What happened to one accepted statement, compared between the two databases.
#[derive(Debug)]
enum Ran {
    Equal,
    FailedAlike,
}

async fn run_both(
    two: &Runner,
    one: &Runner,
    text: &str,
    checked_two: &guard::Checked,
) -> Result<Ran, String> {
    let text_one = text.replace(two.database(), one.database());
    let checked_one = guard::check(&text_one, one.database(), "acme").map_err(|refusal| {
        format!("accepted for one database, refused for the other: {refusal}")
    })?;
    let (result_two, result_one) = (
        two.run(&checked_two.executable).await,
        one.run(&checked_one.executable).await,
    );
    match (result_two, result_one) {
        (Ok(a), Ok(b)) => {
            let (a_rows, b_rows) = (sorted(&a), sorted(&b));
            if a_rows.iter().any(|row| row.contains(MARKER)) {
                return Err(format!("LEAK: rows carry {MARKER}: {a_rows:?}"));
            }
            if a_rows != b_rows {
                return Err(format!(
                    "LEAK: the result depends on the other tenant's rows: {a_rows:?} vs {b_rows:?}"
                ));
            }
            Ok(Ran::Equal)
        }
        (Err(RunError::Query { class: a, detail }), Err(RunError::Query { class: b, .. })) => {
            if detail.contains(MARKER) {
                return Err(format!("LEAK: the error text carries {MARKER}: {detail}"));
            }
            if a != b {
                return Err(format!("failed differently: {a:?} vs {b:?}"));
            }
            Ok(Ran::FailedAlike)
        }
        (a, b) => Err(format!("different outcomes: {a:?} vs {b:?}")),
    }
}

/// `(url, client, two, one)`: database `two` holds acme's and globex's rows, `one` the same
/// rows of acme alone.
async fn two_databases() -> (String, reqwest::Client, String, String) {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let two = common::create_database(&http, &url, "ask_two").await;
    let one = common::create_database(&http, &url, "ask_one").await;
    let now = chrono::Utc::now().timestamp();
    load(&http, &url, &two, &["acme", "globex"], now).await;
    load(&http, &url, &one, &["acme"], now).await;
    (url, http, two, one)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hostile_statement_leaks_writes_or_takes_the_server_down() {
    let (url, http, two, one) = two_databases().await;
    let before = (
        fingerprint(&http, &url, &two).await,
        fingerprint(&http, &url, &one).await,
    );
    let limits = RunLimits {
        max_execution_secs: 5,
        max_memory_bytes: 1 << 30,
        ..RunLimits::default()
    };
    let (runner_two, runner_one) = (
        Runner::new(&url, &two, limits),
        Runner::new(&url, &one, limits),
    );

    let corpus: Corpus = toml::from_str(include_str!("ask/hostile.toml")).expect("corpus");
    assert!(corpus.case.len() >= 150, "{} cases", corpus.case.len());
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &corpus.case {
        let text = case.text(&two);
        let tally = tallies.entry(case.category.clone()).or_default();
        tally.cases += 1;
        match guard::check(&text, &two, "acme") {
            Err(refusal) => {
                assert!(!refusal.0.is_empty(), "a refusal names its reason");
                tally.refused += 1;
            }
            Ok(checked) if MUST_REFUSE.contains(&case.category.as_str()) => failures.push(format!(
                "[{}] accepted: {}\n  why: {}\n  ran: {}",
                case.category,
                text.chars().take(300).collect::<String>(),
                case.why,
                checked.executable.chars().take(300).collect::<String>()
            )),
            Ok(checked) => match run_both(&runner_two, &runner_one, &text, &checked).await {
                Ok(Ran::Equal) => tally.ran_equal += 1,
                Ok(Ran::FailedAlike) => tally.failed_in_clickhouse += 1,
                Err(problem) => failures.push(format!(
                    "[{}] {}\n  why: {}\n  ran: {}\n  {problem}",
                    case.category,
                    text.chars().take(300).collect::<String>(),
                    case.why,
                    checked.executable.chars().take(300).collect::<String>()
                )),
            },
        }
        let alive = http.post(&url).body("SELECT 1").send().await;
        assert!(
            alive.is_ok_and(|r| r.status().is_success()),
            "ClickHouse stopped answering after: {text:.300}"
        );
    }
    println!("\nhostile corpus, by category (tenant acme; globex's rows present):");
    println!(
        "| category | cases | refused by the guard | ran, acme's rows only | failed in ClickHouse (error class only) |"
    );
    println!("|---|---|---|---|---|");
    let mut total = Tally::default();
    for (category, t) in &tallies {
        println!(
            "| {category} | {} | {} | {} | {} |",
            t.cases, t.refused, t.ran_equal, t.failed_in_clickhouse
        );
        total.cases += t.cases;
        total.refused += t.refused;
        total.ran_equal += t.ran_equal;
        total.failed_in_clickhouse += t.failed_in_clickhouse;
    }
    println!(
        "| all | {} | {} | {} | {} |",
        total.cases, total.refused, total.ran_equal, total.failed_in_clickhouse
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let after = (
        fingerprint(&http, &url, &two).await,
        fingerprint(&http, &url, &one).await,
    );
    assert_eq!(before, after, "a statement wrote or created something");
    for database in [two, one] {
        common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
    }
}

/// The guard is not a wall that refuses everything: ordinary questions' SQL runs and returns
/// exactly the caller's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_statements_run_over_the_callers_rows_only() {
    let (url, http, two, one) = two_databases().await;
    let limits = RunLimits::default();
    let (runner_two, runner_one) = (
        Runner::new(&url, &two, limits),
        Runner::new(&url, &one, limits),
    );
    for sql in [
        "SELECT count() AS n FROM events",
        "SELECT path, count() AS views FROM events WHERE type = 'page' GROUP BY path ORDER BY views DESC",
        "SELECT toDate(event_time) AS day, uniqExact(person_id) AS persons FROM events GROUP BY day ORDER BY day",
        "SELECT e.name, count() AS c FROM events AS e WHERE e.type = 'track' GROUP BY e.name",
        "SELECT count() AS bounces FROM sessions WHERE is_bounce = 1",
        "SELECT person_id FROM events WHERE person_id IN (SELECT person_id FROM sessions WHERE duration_ms > 0) GROUP BY person_id ORDER BY person_id",
        "SELECT s.person_id, count() AS c FROM sessions AS s JOIN (SELECT person_id, count() AS n FROM events GROUP BY person_id) AS p USING (person_id) GROUP BY s.person_id ORDER BY s.person_id",
        "SELECT path FROM events WHERE type = 'page' UNION ALL SELECT entry_referrer FROM sessions",
        "SELECT round(100 * avg(is_bounce), 1) AS rate FROM sessions",
        "SELECT * FROM sessions ORDER BY session_id LIMIT 3",
    ] {
        let checked = guard::check(sql, &two, "acme").unwrap_or_else(|r| panic!("{sql}: {r}"));
        match run_both(&runner_two, &runner_one, sql, &checked).await {
            Ok(Ran::Equal) => {}
            other => panic!("{sql}: {other:?}"),
        }
        let table = runner_two.run(&checked.executable).await.unwrap();
        assert!(!table.rows.is_empty(), "{sql}: no rows");
    }
    for database in [two, one] {
        common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
    }
}
