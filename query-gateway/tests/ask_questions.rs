//! Ask's offline translator against the question table `tests/ask/questions.json`, written
//! before the translator by someone who had read only the README and the data's description
//! (`common/shop.rs` generates that data).
//!
//! For each question the answer's typed query and the table's expected one both run through
//! the query model's own doors (`POST /api/v2/query`, `/api/funnel`, `/api/retention`,
//! `/api/persons/{id}/sessions`), with date ranges resolved here, independently of the
//! gateway. An answer is **right** when both give the same metrics, groups and numbers,
//! **wrong** when it answers with anything else. The table passes with no wrong answer, at
//! least 80 % right, and every trap refused. The answer's own rows must equal what its typed
//! query gives through the door (its numbers are the dashboard's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use chrono::{Datelike, Days, Months, NaiveDate, TimeZone};
use chrono_tz::Europe::Berlin;
use clickstream_query_gateway::ask::AskLimits;
use clickstream_query_gateway::{AppState, Clock};
use common::shop::{self, NOW_SECS};
use schemas::tenants::Tenants;
use serde_json::{Value, json};

const KEY: &str = "rk_shop";

async fn get(state: &Arc<AppState>, path: &str) -> (u16, Value) {
    let request = Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .body(Body::empty())
        .unwrap();
    common::call(state, request).await
}

async fn post(state: &Arc<AppState>, path: &str, body: &Value) -> (u16, Value) {
    common::post_json(state, Some(KEY), path, body).await
}

/// Local midnight in Berlin, Unix seconds.
fn midnight(day: NaiveDate) -> i64 {
    Berlin
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .timestamp()
}

/// A v2 `date_range` as `[from, to)` Unix seconds, by Plausible's definitions, written here.
fn resolve(range: &Value) -> (i64, i64) {
    let today = chrono::DateTime::from_timestamp(NOW_SECS, 0)
        .unwrap()
        .with_timezone(&Berlin)
        .date_naive();
    let month_start = today.with_day(1).unwrap();
    let whole =
        |first: NaiveDate, last: NaiveDate| (midnight(first), midnight(last + Days::new(1)));
    if let Some([first, last]) = range.as_array().map(Vec::as_slice) {
        let day = |v: &Value| v.as_str().unwrap().parse::<NaiveDate>().unwrap();
        return whole(day(first), day(last));
    }
    let text = range.as_str().unwrap();
    match text {
        "day" => whole(today, today),
        "24h" => (NOW_SECS - 86_400, NOW_SECS),
        "month" => whole(month_start, month_start + Months::new(1) - Days::new(1)),
        "year" => whole(
            NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(today.year(), 12, 31).unwrap(),
        ),
        _ if text.ends_with("mo") => {
            let n: u32 = text.trim_end_matches("mo").parse().unwrap();
            whole(month_start - Months::new(n), month_start - Days::new(1))
        }
        _ => {
            let n: u64 = text.trim_end_matches('d').parse().unwrap();
            whole(today - Days::new(n), today - Days::new(1))
        }
    }
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What a typed query gives through its door, normalized for comparison: per row, the
/// groups and each metric by name (`sessions` read as `visits`, the same number).
async fn through_the_door(state: &Arc<AppState>, typed: &Value) -> Result<Value, String> {
    let (kind, spec) = typed
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or("not a typed query")?;
    let (from, to) = if kind == "query" {
        (0, 0)
    } else {
        resolve(&spec["date_range"])
    };
    let (status, body) = match kind.as_str() {
        "query" => {
            let mut request = spec.clone();
            request["site_id"] = json!("shop");
            post(state, "/api/v2/query", &request).await
        }
        "funnel" => {
            let steps: Vec<&str> = spec["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let window = spec["window"].as_u64().unwrap_or(86_400);
            get(
                state,
                &format!(
                    "/api/funnel?steps={}&window={window}&from={from}&to={to}",
                    encode(&steps.join(","))
                ),
            )
            .await
        }
        "retention" => get(state, &format!("/api/retention?from={from}&to={to}")).await,
        "person" => {
            let id = spec["id"].as_str().unwrap();
            let number: usize = id
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .map_err(|_| format!("unknown id {id}"))?;
            get(
                state,
                &format!(
                    "/api/persons/shop-person-{number}/sessions?from={from}&to={to}&limit=100"
                ),
            )
            .await
        }
        other => return Err(format!("unknown kind {other}")),
    };
    if status != 200 {
        return Err(format!("{status} {body}"));
    }
    Ok(match kind.as_str() {
        "query" => normalize_v2(&body),
        "funnel" => json!({"funnel": body["steps"]}),
        "retention" => json!({"retention": body["cohorts"]}),
        _ => json!({"person": body["sessions"]}),
    })
}

fn normalize_v2(body: &Value) -> Value {
    let names: Vec<String> = body["query"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            if m == "sessions" {
                "visits".to_owned()
            } else {
                m.as_str().unwrap().to_owned()
            }
        })
        .collect();
    let rows: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut metrics = BTreeMap::new();
            for (i, name) in names.iter().enumerate() {
                metrics.insert(name.clone(), row["metrics"][i].clone());
                if let Some(compared) = row.get("comparison") {
                    metrics.insert(format!("{name} before"), compared["metrics"][i].clone());
                    metrics.insert(format!("{name} change"), compared["change"][i].clone());
                }
            }
            json!({"groups": row["dimensions"], "metrics": metrics})
        })
        .collect();
    json!({"dimensions": body["query"]["dimensions"], "rows": rows})
}

/// The answer's own rows against its typed query through the door (v2 only): the numbers
/// shown are the model's.
fn rows_match_the_door(answer: &Value, door: &Value) -> bool {
    let rows = answer["rows"].as_array().unwrap();
    let door_rows = door["rows"].as_array().unwrap();
    rows.len() == door_rows.len()
        && rows.iter().zip(door_rows).all(|(row, door_row)| {
            let cells = row.as_array().unwrap();
            let groups = door_row["groups"].as_array().unwrap();
            let metrics = door_row["metrics"].as_object().unwrap();
            groups.iter().all(|g| cells.contains(g)) && metrics.values().all(|m| cells.contains(m))
        })
}

/// A gateway over the shop's data at its fixed "now", with Ask's rate limit out of the way.
async fn shop_gateway() -> (Arc<AppState>, reqwest::Client, String, String) {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "ask_questions").await;
    shop::load(&http, &url, &database).await;
    let mut state = AppState::offline(Tenants::parse(shop::TENANTS).unwrap(), &url, &database);
    state.clock = Clock::fixed(NOW_SECS);
    state.ask = common::ask_service(
        &url,
        &database,
        None,
        AskLimits {
            questions_per_minute: std::num::NonZeroU32::new(10_000).unwrap(),
            model_calls_per_day: 0,
        },
    )
    .0;
    (Arc::new(state), http, url, database)
}

/// Asks every question and trap of `table`; prints the score and every miss; fails on a
/// wrong answer, an answered trap, or fewer than 80 % right.
async fn run_table(name: &str, table: &str) {
    let (state, http, url, database) = shop_gateway().await;
    let table: Value = serde_json::from_str(table).unwrap();
    let questions = table["questions"].as_array().unwrap();
    let (mut right, mut wrong, mut refused) = (0, Vec::new(), Vec::new());
    for question in questions {
        let text = question["text"].as_str().unwrap();
        let (status, answer) = post(&state, "/api/ask", &json!({"question": text})).await;
        assert_eq!(status, 200, "{text}: {answer}");
        if answer["outcome"] != "answered" {
            refused.push(format!("{text}\n      -> {}", answer["summary"]));
            continue;
        }
        let expected = through_the_door(&state, &question["expect"])
            .await
            .unwrap_or_else(|e| panic!("{text}: the table's query fails: {e}"));
        let given = through_the_door(&state, &answer["query"])
            .await
            .unwrap_or_else(|e| panic!("{text}: the answer's query fails: {e}"));
        if answer["query"].get("query").is_some() {
            assert!(
                rows_match_the_door(&answer, &given),
                "{text}: the answer's rows are not its query's: {answer}"
            );
        }
        if expected == given {
            right += 1;
        } else {
            wrong.push(format!(
                "{text}\n      expected {}\n      answered {}",
                question["expect"], answer["query"]
            ));
        }
    }
    let traps = table["traps"].as_array().unwrap();
    let mut answered_traps = Vec::new();
    for trap in traps {
        let text = trap["text"].as_str().unwrap();
        let (status, answer) = post(&state, "/api/ask", &json!({"question": text})).await;
        assert_eq!(status, 200, "{text}: {answer}");
        if answer["outcome"] == "answered" {
            answered_traps.push(format!("{text}\n      answered {}", answer["query"]));
        }
    }
    let total = questions.len();
    println!(
        "{name}: {right}/{total} right, {} wrong, {} refused; {} of {} traps answered",
        wrong.len(),
        refused.len(),
        answered_traps.len(),
        traps.len()
    );
    for line in &wrong {
        println!("  WRONG {line}");
    }
    for line in &refused {
        println!("  REFUSED {line}");
    }
    for line in &answered_traps {
        println!("  TRAP ANSWERED {line}");
    }
    common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
    assert!(wrong.is_empty(), "{name}: {} wrong answers", wrong.len());
    assert!(
        answered_traps.is_empty(),
        "{name}: {} traps answered",
        answered_traps.len()
    );
    assert!(
        right * 100 >= total * 80,
        "{name}: only {right} of {total} right"
    );
}

/// The table written before the translator changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_question_table_is_answered_right_or_refused() {
    run_table("questions.json", include_str!("ask/questions.json")).await;
}

/// A second table by another writer, who saw neither the translator nor the first table;
/// its first score (before any change made for it) is in the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_out_table_is_answered_right_or_refused() {
    run_table(
        "questions-holdout.json",
        include_str!("ask/questions-holdout.json"),
    )
    .await;
}

/// Two gateway processes share translations through Redis: the second asking of a question
/// (with other spacing and punctuation) is a hit, its numbers computed afresh (rows written in
/// between are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translations_are_shared_through_redis_and_numbers_are_never_stale() {
    let redis_url = std::env::var("CLICKSTREAM_REDIS_URL").unwrap_or_else(|_| {
        panic!("CLICKSTREAM_REDIS_URL is not set: run the tests with deploy/test.sh, which starts Redis")
    });
    let namespace = format!(
        "test-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let (_, http, url, database) = shop_gateway().await;
    let gateway = |metrics: Arc<clickstream_query_gateway::metrics::Metrics>| {
        let runner =
            clickstream_query_gateway::ask::run::Runner::new(&url, &database, Default::default());
        Arc::new(
            clickstream_query_gateway::ask::AskService::new(
                runner,
                None,
                schemas::version::ServerVersion::OLDEST,
                AskLimits::default(),
                metrics,
            )
            .with_translation_cache(&redis_url, &namespace),
        )
    };
    let mut processes = Vec::new();
    for _ in 0..2 {
        let mut state = AppState::offline(Tenants::parse(shop::TENANTS).unwrap(), &url, &database);
        state.clock = Clock::fixed(NOW_SECS);
        state.ask = gateway(state.metrics.clone());
        processes.push(Arc::new(state));
    }
    let question = "How many visitors from Germany in the last 30 days?";
    let (_, before) = post(&processes[0], "/api/ask", &json!({"question": question})).await;
    assert_eq!(before["outcome"], "answered", "{before}");
    assert_eq!(processes[0].metrics.translation_cache_counts(), (0, 1));
    // A new German visitor, two days ago.
    let at = NOW_SECS - 2 * 86_400;
    common::sql(&http, &url, &format!(
        "INSERT INTO {database}.events (tenant, message_id, type, anonymous_id, event_time, event_time_ms, received_at, received_at_ms, path, session_id, person_id, country, late, is_bot, version) \
         VALUES ('shop', 'cache-e1', 'page', 'anon-new', toDateTime({at}), {at}000, toDateTime({at}), {at}000, '/', 'cache-s1', 'person-new', 'DE', 0, 0, 1)"
    )).await;
    common::sql(&http, &url, &format!(
        "INSERT INTO {database}.sessions (tenant, session_id, person_id, visitor_id, start_time, start_ms, end_ms, events, page_views, is_bounce, entry_path, exit_path, country, deleted, version) \
         VALUES ('shop', 'cache-s1', 'person-new', 'anon-new', toDateTime({at}), {at}000, {at}000, 1, 1, 1, '/', '/', 'DE', 0, 1)"
    )).await;
    let (_, after) = post(
        &processes[1],
        "/api/ask",
        &json!({"question": "  How many visitors from  Germany in the last 30 days "}),
    )
    .await;
    assert_eq!(after["outcome"], "answered", "{after}");
    assert_eq!(
        processes[1].metrics.translation_cache_counts(),
        (1, 0),
        "the other process's translation was used"
    );
    assert_eq!(after["query"], before["query"]);
    assert!(
        after["note"].as_str().unwrap_or("").contains("cache"),
        "{after}"
    );
    let count = |answer: &Value| answer["rows"][0][0].as_u64().unwrap();
    assert_eq!(
        count(&after),
        count(&before) + 1,
        "the number is computed afresh: {before} {after}"
    );
    common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
}
