//! ClickHouse 26 beside Debian's 18.16: every statement the query gateway emits, on both
//! servers over the same rows, with equal answers.
//!
//! Each server gets the DDL rendered for its own version; the same generated rows (the query
//! model test's) are inserted into both with the same statements. The gateway then runs over
//! chdb's `/dual` door (see `deploy/chdb/server.py`), which sends every statement unchanged to
//! both servers and compares the answers: rows as multisets, floats within 1e-9 relative.
//! The corpus covers each metric, each dimension, each filter operator and combinator, each
//! comparison mode and several time zones (Stats API v2), the REST endpoints, Ask's offline
//! translator, and model-written SQL after the guard's rewriting. A difference fails the test
//! and names the statement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use clickstream_query_gateway::AppState;
use clickstream_query_gateway::ask::guard;
use clickstream_query_gateway::ask::run::Runner;
use clickstream_query_gateway::erasure::ErasureService;
use clickstream_query_gateway::query::model::{Metric, Operator, VisitAttribute};
use common::chdb::Chdb;
use common::rows::{ZONES, generate, load};
use common::{Fixture, sql};
use schemas::tenants::Tenants;
use schemas::version::ServerVersion;

/// Both of the generated rows' windows (2026-03 and 2026-10/11), and the days between.
const RANGE: [&str; 2] = ["2026-03-01", "2026-11-30"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_gives_equal_answers_on_18_16_and_26() {
    let reference = common::clickhouse_url();
    let http = reqwest::Client::new();
    let chdb = Chdb::start("gateway", Some(&reference), None);
    let database = format!(
        "modern_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    for url in [&reference, &chdb.url] {
        let version = ServerVersion::parse(&sql(&http, url, "SELECT version()").await).unwrap();
        for statement in schemas::ddl::statements(&database, version) {
            sql(&http, url, &statement).await;
        }
    }
    let modern_types = sql(
        &http,
        &chdb.url,
        &format!("SELECT count() FROM system.columns WHERE database = '{database}' AND type LIKE 'LowCardinality%'"),
    )
    .await;
    assert!(
        modern_types.trim().parse::<u32>().unwrap() > 10,
        "26 gets the modern DDL"
    );
    let (events, visits) = generate(&mut StdRng::seed_from_u64(26));
    for url in [&reference, &chdb.url] {
        load(&http, url, &database, &events, &visits).await;
    }

    let tenants = Tenants::parse(
        "[[tenants]]\nid = \"acme\"\nwrite_keys = [\"wk\"]\nread_keys = [\"rk_acme\"]\nadmin_keys = [\"ak_acme\"]\ngoals = [{ event = \"Signed Up\" }, { page = \"/blog*\", name = \"Blog\" }]\n",
    )
    .unwrap();
    let mut state = AppState::offline(tenants, &chdb.dual_url, &database);
    state.erasure = Some(Arc::new(erasure_service(&chdb.dual_url, &database).await));
    let fixture = Fixture {
        state: Arc::new(state),
        http: http.clone(),
        url: chdb.dual_url.clone(),
        database: database.clone(),
    };
    // Failed requests are listed after the differences, which say why.
    let mut failures = Vec::new();
    let mut requests = 0;
    for body in v2_corpus() {
        let (status, answer) = fixture.post(Some("rk_acme"), "/api/v2/query", &body).await;
        if status != 200 {
            failures.push(format!("{body} -> {status} {answer}"));
        }
        requests += 1;
    }
    for path in rest_corpus() {
        let (status, answer) = fixture.get(Some("rk_acme"), &path).await;
        if status != 200 {
            failures.push(format!("{path} -> {status} {answer}"));
        }
        requests += 1;
    }
    requests += erasure_door(&fixture, &mut failures).await;
    let mut answered = 0;
    for question in QUESTIONS {
        let (status, answer) = fixture
            .post(
                Some("rk_acme"),
                "/api/ask",
                &json!({ "question": question }),
            )
            .await;
        if status != 200 || answer["outcome"] == "failed" {
            failures.push(format!("{question} -> {status} {answer}"));
        }
        answered += usize::from(answer["outcome"] == "answered");
    }
    let runner = Runner::new(&chdb.dual_url, &database, Default::default());
    for statement in MODEL_SQL {
        let checked = guard::check(statement, &database, "acme")
            .unwrap_or_else(|refusal| panic!("{statement}: {}", refusal.0));
        if let Err(error) = runner.run(&checked.executable).await {
            failures.push(format!("{statement} -> {error}"));
        }
    }

    let report = chdb.report(&http).await;
    let differences = report["differences"].as_array().unwrap();
    println!(
        "{requests} API requests, {} questions, {} model statements: {} statements ran on 18.16 and 26, {} equal",
        QUESTIONS.len(),
        MODEL_SQL.len(),
        report["statements"],
        report["equal"]
    );
    for difference in differences {
        println!(
            "DIFFERENT ({}): {}\n  settings: {}\n  18.16: {}\n  26: {}\n",
            difference["difference"].as_str().unwrap(),
            difference["statement"].as_str().unwrap(),
            difference["settings"].as_str().unwrap(),
            difference["reference"].as_str().unwrap(),
            difference["chdb"].as_str().unwrap()
        );
    }
    assert!(
        failures.is_empty(),
        "failed requests:\n{}\nchdb's log:\n{}",
        failures.join("\n"),
        chdb.log()
    );
    assert!(
        answered >= 3,
        "the translator answered {answered} questions"
    );
    assert!(
        report["statements"].as_u64().unwrap() >= requests as u64,
        "every request ran statements"
    );
    assert!(differences.is_empty(), "{} differences", differences.len());
    // The comparison itself: answers that differ are reported.
    sql(&http, &chdb.dual_url, "SELECT version()").await;
    let checked = chdb.report(&http).await;
    assert_eq!(
        checked["differences"][0]["statement"], "SELECT version()",
        "the dual door reports a difference: {checked}"
    );
    sql(&http, &reference, &format!("DROP DATABASE {database}")).await;
}

/// An erasure service over the dual door, writing to a control topic of its own on the test
/// broker.
async fn erasure_service(url: &str, database: &str) -> ErasureService {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let brokers = common::required_env("CLICKSTREAM_KAFKA_BROKERS");
    let topic = format!("{database}_control");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let writer = clickhouse::Client::default()
        .with_url(url)
        .with_database(database)
        .with_validation(false);
    ErasureService::new(&brokers, &topic, "clickhouse26 salt", writer).unwrap()
}

/// The admin door's statements: a person's export, their erasure (the text tables cleared,
/// the request recorded), the audit list and the request, a lift. Returns how many requests
/// it made; a status other than 200 or 202 is a failure.
async fn erasure_door(fixture: &Fixture, failures: &mut Vec<String>) -> usize {
    let key = Some("ak_acme");
    let mut answers = vec![
        fixture.get(key, "/api/persons/u3/export").await,
        fixture.delete(key, "/api/persons/u3").await,
    ];
    let request = answers[1].1["request_id"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    answers.push(fixture.get(key, "/api/deletions").await);
    answers.push(fixture.get(key, &format!("/api/deletions/{request}")).await);
    answers.push(fixture.delete(key, "/api/suppressions/u3").await);
    for (i, (status, answer)) in answers.iter().enumerate() {
        if !matches!(status.as_u16(), 200 | 202) {
            failures.push(format!("erasure request {i} -> {status} {answer}"));
        }
    }
    assert!(
        answers[0].1["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty()),
        "the export has the person's events: {}",
        answers[0].1
    );
    answers.len()
}

fn query(metrics: &[&str], dimensions: &[&str], filters: Value, zone: &str) -> Value {
    json!({
        "site_id": "acme", "metrics": metrics, "dimensions": dimensions, "filters": filters,
        "date_range": RANGE, "timezone": zone,
    })
}

/// Stats API v2 queries: each metric alone and with a breakdown; each dimension; each filter
/// operator on an event, a visit and a property dimension, and the combinators; each
/// comparison mode; each time zone over days and hours.
fn v2_corpus() -> Vec<Value> {
    let mut corpus = Vec::new();
    for metric in Metric::ALL {
        let name = metric.name();
        let dimensions: &[&str] = match name {
            "percentage" => &["visit:country"],
            "conversion_rate" => &["event:goal"],
            _ => &[],
        };
        corpus.push(query(&[name], dimensions, json!([]), "UTC"));
        if !matches!(name, "percentage" | "conversion_rate" | "views_per_visit") {
            corpus.push(query(&[name], &["visit:device"], json!([]), "UTC"));
        }
    }
    let mut dimensions: Vec<String> = [
        "event:page",
        "event:name",
        "event:hostname",
        "event:goal",
        "event:props:plan",
    ]
    .map(String::from)
    .to_vec();
    dimensions.extend(
        VisitAttribute::ALL
            .iter()
            .map(|(_, name)| format!("visit:{name}")),
    );
    for dimension in &dimensions {
        let metrics: &[&str] = if dimension.starts_with("visit:") {
            &["visitors", "visits", "bounce_rate", "visit_duration"]
        } else {
            &["visitors", "events", "pageviews"]
        };
        corpus.push(query(metrics, &[dimension], json!([]), "UTC"));
    }
    for granularity in ["minute", "hour", "day", "week", "month"] {
        let dimension = format!("time:{granularity}");
        let mut q = query(&["visitors", "pageviews"], &[&dimension], json!([]), "UTC");
        if granularity == "minute" {
            q["date_range"] = json!(["2026-03-10", "2026-03-10"]);
        }
        corpus.push(q);
    }
    for (_, operator) in Operator::ALL {
        for (dimension, value) in [
            ("event:page", "/blog"),
            ("visit:country", "DE"),
            ("event:props:plan", "pro"),
            ("event:name", "Signed Up"),
            ("visit:utm_source", "news"),
        ] {
            let filter = json!([[operator, dimension, [value, "/"]]]);
            corpus.push(query(
                &["visitors", "events"],
                &["event:page"],
                filter,
                "UTC",
            ));
        }
    }
    let condition = json!(["is", "visit:device", ["Desktop"]]);
    let other = json!(["contains", "event:page", ["blog"]]);
    for filter in [
        json!([["and", [condition, other]]]),
        json!([["or", [condition, other]]]),
        json!([["not", condition]]),
        json!([["has_done", ["is", "event:name", ["Signed Up"]]]]),
        json!([["has_not_done", ["is", "event:page", ["/pricing"]]]]),
    ] {
        corpus.push(query(
            &["visitors", "visits"],
            &["visit:country"],
            filter,
            "UTC",
        ));
    }
    for comparison in [
        json!({"mode": "previous_period"}),
        json!({"mode": "year_over_year"}),
        json!({"mode": "custom", "date_range": ["2026-01-01", "2026-02-28"]}),
    ] {
        for dimensions in [vec![], vec!["visit:source"], vec!["time:month"]] {
            let mut q = query(&["visitors", "bounce_rate"], &dimensions, json!([]), "UTC");
            q["include"] = json!({ "comparisons": comparison });
            corpus.push(q);
        }
    }
    for zone in ZONES {
        for dimension in ["time:day", "time:hour"] {
            let mut q = query(&["visitors", "visits"], &[dimension], json!([]), zone);
            q["date_range"] = json!(["2026-03-07", "2026-03-09"]);
            corpus.push(q);
        }
        corpus.push(query(&["pageviews"], &["event:page"], json!([]), zone));
    }
    corpus
}

/// The REST endpoints, over the same range.
fn rest_corpus() -> Vec<String> {
    let range = "from=1772323200&to=1796083200";
    let mut paths = vec![
        format!("/api/overview?{range}"),
        format!("/api/overview?{range}&path=/pricing"),
        format!("/api/progress"),
        format!("/api/retention?{range}"),
        format!("/api/funnel?{range}&steps=page:/,event:Signed%20Up"),
        format!("/api/funnel?{range}&steps=page:/pricing,page:/blog/a&window=3600"),
        format!("/api/persons/p1/sessions"),
    ];
    for metric in ["page_views", "sessions", "visitors", "events"] {
        paths.push(format!(
            "/api/timeseries?{range}&interval=day&metric={metric}"
        ));
    }
    for kind in ["pages", "events", "referrers", "utm_sources"] {
        paths.push(format!("/api/top/{kind}?{range}"));
    }
    paths
}

const QUESTIONS: [&str; 8] = [
    "How many page views in the last 365 days?",
    "How many visitors in the last 365 days?",
    "Top 10 pages in the last 365 days",
    "How many sessions in the last 365 days?",
    "What is the bounce rate in the last 365 days?",
    "Page views per day in the last 30 days",
    "How many Signed Up events in the last 365 days?",
    "Which referrers sent the most visitors in the last 365 days?",
];

/// Statements as a model writes them over Ask's views (the prompt's own examples among them).
const MODEL_SQL: [&str; 8] = [
    "SELECT count() AS views FROM events WHERE type = 'page'",
    "SELECT path AS page, count() AS views FROM events WHERE type = 'page' GROUP BY page ORDER BY views DESC LIMIT 5",
    "SELECT toDate(start_time, 'Europe/Berlin') AS day, round(100 * avg(is_bounce), 1) AS bounce_rate FROM sessions GROUP BY day ORDER BY day",
    "SELECT count() AS people FROM (SELECT person_id, max(name = 'Signed Up') AS signed_up, max(name = 'Played') AS played FROM events WHERE type = 'track' GROUP BY person_id) WHERE signed_up = 1 AND played = 0",
    "SELECT uniqExact(if(anonymous_id != '', anonymous_id, user_id)) AS visitors FROM events",
    "SELECT toStartOfHour(event_time) AS hour, countIf(type = 'page') AS views FROM events GROUP BY hour ORDER BY hour LIMIT 20",
    "SELECT utm_source, count() AS visits, avg(duration_ms) / 1000 AS seconds FROM sessions GROUP BY utm_source",
    "SELECT name, uniqExact(person_id) AS persons FROM events WHERE type = 'track' AND event_time >= toDateTime('2026-03-01 00:00:00') GROUP BY name ORDER BY persons DESC",
];
