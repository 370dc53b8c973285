//! The query compiler against an independent oracle: random events and visits in real
//! ClickHouse, random Stats API v2 queries (metrics, dimensions, filter trees, zones with
//! DST and :30/:45 offsets), each answer compared with an in-memory evaluation of the same
//! query written from the README's rules, with its own time-zone library (jiff; the gateway
//! uses chrono-tz) and none of the gateway's helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::rows::{Event, PAGES, TENANT, Visit, ZONES, generate, load};

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use clickstream_query_gateway::AppState;
use schemas::tenants::Tenants;

/// The tenant's goals, as the oracle reads them: a track call "Signed Up"; a page view of a
/// location starting with `/blog` (case-sensitive).
const GOALS: &str = "goals = [{ event = \"Signed Up\" }, { page = \"/blog*\", name = \"Blog\" }]";
const WEEK_MS: i64 = 7 * 86_400_000;

/// The oracle: the README's rules, evaluated over the generated rows.
struct Oracle<'a> {
    events: &'a [Event],
    visits: &'a [Visit],
    zone: TimeZone,
    from_ms: i64,
    to_ms: i64,
    first_date: jiff::civil::Date,
}

impl Oracle<'_> {
    fn counted_events(&self) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| {
                e.tenant == TENANT
                    && e.time_ms / 1000 * 1000 >= self.from_ms
                    && e.time_ms / 1000 * 1000 < self.to_ms
            })
            .filter(|e| {
                !e.late
                    && !e.bot
                    && !e.non_interactive
                    && ["page", "screen", "track"].contains(&e.kind)
            })
            .collect()
    }

    fn counted_visits(&self) -> Vec<&Visit> {
        self.visits
            .iter()
            .filter(|v| {
                v.tenant == TENANT
                    && !v.deleted
                    && v.start_ms / 1000 * 1000 >= self.from_ms
                    && v.start_ms / 1000 * 1000 < self.to_ms
            })
            .collect()
    }

    /// The visit an event's visit attributes come from: started at most a week before the
    /// range.
    fn visit_of(&self, event: &Event) -> Option<&Visit> {
        self.visits.iter().find(|v| {
            v.tenant == TENANT
                && !v.deleted
                && v.id == event.session_id
                && v.start_ms / 1000 * 1000 >= self.from_ms - WEEK_MS
                && v.start_ms / 1000 * 1000 < self.to_ms
        })
    }

    fn event_value(&self, event: &Event, dimension: &str) -> String {
        match dimension {
            "event:page" => {
                if event.kind == "screen" {
                    event.name.clone()
                } else {
                    event.path.clone()
                }
            }
            "event:name" => {
                if event.kind == "track" {
                    event.name.clone()
                } else {
                    "pageview".into()
                }
            }
            d if d.starts_with("event:props:") => {
                let key = &d["event:props:".len()..];
                event
                    .props
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or("(none)".into(), |(_, v)| v.clone())
            }
            d if d.starts_with("visit:") => self
                .visit_of(event)
                .map_or(String::new(), |v| visit_value(v, d)),
            d => self.time_label(event.time_ms, d),
        }
    }

    /// Every key an event has: one per goal it completes for `event:goal` (none: no key).
    fn event_keys(&self, event: &Event, dimensions: &[&str]) -> Vec<Vec<String>> {
        let mut keys: Vec<Vec<String>> = vec![Vec::new()];
        for dimension in dimensions {
            let values = if *dimension == "event:goal" {
                goals_of(event)
            } else {
                vec![self.event_value(event, dimension)]
            };
            keys = keys
                .into_iter()
                .flat_map(|key| {
                    values.iter().map(move |value| {
                        let mut key = key.clone();
                        key.push(value.clone());
                        key
                    })
                })
                .collect();
        }
        keys
    }

    fn time_label(&self, ms: i64, dimension: &str) -> String {
        let local = Timestamp::from_millisecond(ms / 1000 * 1000)
            .unwrap()
            .to_zoned(self.zone.clone());
        match dimension {
            // Each local hour is its own bucket, so the hour repeated when clocks fall back
            // is two (a 25-hour day has 25, see the README's time zones): the key keeps them
            // apart by their UTC offset, which the reported row drops (see `shown`).
            "time:hour" => format!(
                "{}{REPEATED_HOUR}{}",
                local.strftime("%Y-%m-%d %H:00:00"),
                local.offset().seconds()
            ),
            "time:day" => local.date().to_string(),
            "time:week" => {
                let date = local.date();
                let monday = date
                    .checked_sub((date.weekday().to_monday_zero_offset() as i64).days())
                    .unwrap();
                monday.max(self.first_date).to_string()
            }
            "time:month" => local.date().first_of_month().to_string(),
            other => panic!("{other}"),
        }
    }

    fn condition_holds(&self, value: &str, condition: &Value) -> bool {
        let op = condition[0].as_str().unwrap();
        let clauses: Vec<&str> = condition[2]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let insensitive =
            condition.get(3).and_then(|m| m["case_sensitive"].as_bool()) == Some(false);
        let norm = |s: &str| {
            if insensitive {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        let any = clauses
            .iter()
            .any(|clause| match op.trim_end_matches("_not") {
                "is" => norm(value) == norm(&stored(condition[1].as_str().unwrap(), clause)),
                "contains" => norm(value).contains(&norm(clause)),
                "matches" => regex_lite_match(clause, value),
                other => panic!("{other}"),
            });
        any != op.ends_with("_not")
    }

    fn event_filter(&self, event: &Event, filter: &Value) -> bool {
        let op = filter[0].as_str().unwrap();
        match op {
            "and" => filter[1]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| self.event_filter(event, f)),
            "or" => filter[1]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| self.event_filter(event, f)),
            "not" => !self.event_filter(event, &filter[1]),
            "has_done" | "has_not_done" => {
                let done = self.counted_events().iter().any(|other| {
                    other.session_id == event.session_id && self.event_filter(other, &filter[1])
                });
                done == (op == "has_done")
            }
            _ => self.condition_holds(
                &self.event_value(event, filter[1].as_str().unwrap()),
                filter,
            ),
        }
    }

    fn visit_filter(&self, visit: &Visit, filter: &Value) -> bool {
        let op = filter[0].as_str().unwrap();
        let has_event = |f: &Value| {
            self.counted_events()
                .iter()
                .any(|e| e.session_id == visit.id && self.event_filter(e, f))
        };
        if event_only(filter) {
            return has_event(filter);
        }
        match op {
            "and" | "or" => {
                let children = filter[1].as_array().unwrap();
                let (events, visits): (Vec<&Value>, Vec<&Value>) =
                    children.iter().partition(|f| event_only(f));
                let grouped = (!events.is_empty()).then(|| has_event(&json!([op, events])));
                let mut results = visits
                    .iter()
                    .map(|f| self.visit_filter(visit, f))
                    .chain(grouped);
                if op == "and" {
                    results.all(|r| r)
                } else {
                    results.any(|r| r)
                }
            }
            "not" => !self.visit_filter(visit, &filter[1]),
            "has_done" => has_event(&filter[1]),
            "has_not_done" => !has_event(&filter[1]),
            _ => self.condition_holds(&visit_value(visit, filter[1].as_str().unwrap()), filter),
        }
    }

    fn answer(&self, metrics: &[&str], dimensions: &[&str], filters: &[Value]) -> Rows {
        // Rows come from the table(s) the metrics read.
        let reads_events = metrics.iter().any(|m| {
            [
                "visitors",
                "persons",
                "pageviews",
                "events",
                "percentage",
                "conversion_rate",
            ]
            .contains(m)
        });
        let reads_visits = metrics.iter().any(|m| {
            [
                "visits",
                "sessions",
                "bounce_rate",
                "visit_duration",
                "views_per_visit",
            ]
            .contains(m)
        });
        let events: Vec<&Event> = self
            .counted_events()
            .into_iter()
            .filter(|e| reads_events && filters.iter().all(|f| self.event_filter(e, f)))
            .collect();
        let visits: Vec<&Visit> = self
            .counted_visits()
            .into_iter()
            .filter(|v| reads_visits && filters.iter().all(|f| self.visit_filter(v, f)))
            .collect();
        let mut groups: BTreeMap<Vec<String>, (Vec<&Event>, Vec<&Visit>)> = BTreeMap::new();
        for event in &events {
            for key in self.event_keys(event, dimensions) {
                groups.entry(key).or_default().0.push(event);
            }
        }
        for visit in &visits {
            let key = dimensions
                .iter()
                .map(|d| match *d {
                    "event:page" => visit.entry_path.clone(),
                    d if d.starts_with("time:") => self.time_label(visit.start_ms, d),
                    d => visit_value(visit, d),
                })
                .collect();
            groups.entry(key).or_default().1.push(visit);
        }
        let all_visitors = distinct_visitors(&events);
        // Conversion rate's denominator: the same events without top-level property filters.
        let converting_base = distinct_visitors(
            &self
                .counted_events()
                .into_iter()
                .filter(|e| {
                    filters.iter().all(|f| {
                        f[1].as_str().is_some_and(|d| d.starts_with("event:props:"))
                            || self.event_filter(e, f)
                    })
                })
                .collect::<Vec<_>>(),
        );
        let rows: BTreeMap<Vec<String>, Vec<Value>> = groups
            .into_iter()
            .map(|(key, (events, visits))| {
                let labels: Vec<String> = key
                    .iter()
                    .zip(dimensions)
                    .map(|(value, d)| display(d, value))
                    .collect();
                let values =
                    metric_values(metrics, &events, &visits, (all_visitors, converting_base));
                (labels, values)
            })
            .collect();
        let empty = metric_values(metrics, &[], &[], (all_visitors, converting_base));
        Rows { rows, empty }
    }
}

/// An oracle's answer.
struct Rows {
    /// The dimensions' labels -> the metrics' values, as reported.
    rows: BTreeMap<Vec<String>, Vec<Value>>,
    /// The metrics over no events or visits (a key the compared period lacks).
    empty: Vec<Value>,
}

/// The metrics over one group's events and visits, as reported (Plausible's rounding), with
/// the period's visitors and conversion base for the shares.
fn metric_values(
    metrics: &[&str],
    events: &[&Event],
    visits: &[&Visit],
    (all_visitors, converting_base): (usize, usize),
) -> Vec<Value> {
    let n = visits.len() as f64;
    metrics
        .iter()
        .map(|metric| match *metric {
            "visitors" => json!(distinct_visitors(events)),
            "persons" => json!(
                events
                    .iter()
                    .map(|e| &e.person_id)
                    .collect::<HashSet<_>>()
                    .len()
            ),
            "pageviews" => json!(events.iter().filter(|e| e.kind != "track").count()),
            "events" => json!(events.len()),
            "visits" | "sessions" => json!(visits.len()),
            "bounce_rate" => json!(if n > 0.0 {
                (visits.iter().filter(|v| v.bounce).count() as f64 * 100.0 / n).round() as i64
            } else {
                0
            }),
            "visit_duration" => json!(if n > 0.0 {
                (visits.iter().map(|v| v.duration_ms).sum::<i64>() as f64 / 1000.0 / n).round()
                    as i64
            } else {
                0
            }),
            "percentage" => json!(if all_visitors > 0 {
                Some(
                    (distinct_visitors(events) as f64 * 100.0 / all_visitors as f64 * 10.0).round()
                        / 10.0,
                )
            } else {
                None
            }),
            "conversion_rate" => json!(if converting_base > 0 {
                (distinct_visitors(events) as f64 * 100.0 / converting_base as f64 * 100.0).round()
                    / 100.0
            } else {
                0.0
            }),
            "views_per_visit" => json!(if n > 0.0 {
                (visits.iter().map(|v| f64::from(v.page_views)).sum::<f64>() / n * 100.0).round()
                    / 100.0
            } else {
                0.0
            }),
            other => panic!("{other}"),
        })
        .collect()
}

/// The goals an event completes (the tenant's, written out by hand).
fn goals_of(event: &Event) -> Vec<String> {
    let mut goals = Vec::new();
    if event.kind == "track" && event.name == "Signed Up" {
        goals.push("Signed Up".to_owned());
    }
    let location = if event.kind == "screen" {
        &event.name
    } else {
        &event.path
    };
    if (event.kind == "page" || event.kind == "screen") && location.starts_with("/blog") {
        goals.push("Blog".to_owned());
    }
    goals
}

/// What separates an hour's label from the offset that tells a repeated local hour apart.
const REPEATED_HOUR: char = '\u{1}';

/// The labels as reported: a repeated local hour shows its wall-clock label twice.
fn shown(labels: &[String]) -> Vec<&str> {
    labels
        .iter()
        .map(|label| label.split(REPEATED_HOUR).next().unwrap_or(label))
        .collect()
}

/// The answer's rows as JSON text, each with its comparison when there is one.
fn expected_rows(metrics: &[&str], answer: &Rows, compared: Option<&Rows>) -> BTreeSet<String> {
    answer
        .rows
        .iter()
        .map(|(labels, values)| {
            let mut row = json!({"dimensions": shown(labels), "metrics": values});
            if let Some(compared) = compared {
                let before = compared.rows.get(labels).unwrap_or(&compared.empty);
                let change: Vec<Value> = metrics
                    .iter()
                    .zip(before.iter().zip(values))
                    .map(|(metric, (old, new))| plausible_change(metric, old, new))
                    .collect();
                row["comparison"] =
                    json!({"dimensions": shown(labels), "metrics": before, "change": change});
            }
            row.to_string()
        })
        .collect()
}

/// Plausible's change between two reported values (`lib/plausible/stats/compare.ex`): the
/// bounce rate's difference in points (none from 0), the conversion rate's difference to one
/// decimal, otherwise the percent change rounded, 100 from 0 to more, 0 from 0 to 0; none
/// from an undefined value.
fn plausible_change(metric: &str, old: &Value, new: &Value) -> Value {
    let (Some(old), Some(new)) = (old.as_f64(), new.as_f64()) else {
        return Value::Null;
    };
    match metric {
        "bounce_rate" if old > 0.0 => json!((new - old) as i64),
        "bounce_rate" => Value::Null,
        "conversion_rate" => json!(((new - old) * 10.0).round() / 10.0),
        _ if old == 0.0 => json!(if new > 0.0 { 100 } else { 0 }),
        _ => json!(((new - old) / old * 100.0).round() as i64),
    }
}

fn distinct_visitors(events: &[&Event]) -> usize {
    events
        .iter()
        .map(|e| {
            if e.anonymous_id.is_empty() {
                &e.user_id
            } else {
                &e.anonymous_id
            }
        })
        .collect::<HashSet<_>>()
        .len()
}

fn visit_value(visit: &Visit, dimension: &str) -> String {
    match dimension {
        "visit:entry_page" => visit.entry_path.clone(),
        "visit:exit_page" => visit.exit_path.clone(),
        "visit:referrer" => visit.referrer.clone(),
        "visit:utm_source" => visit.utm_source.clone(),
        "visit:device" => visit.device.clone(),
        "visit:country" => visit.country.clone(),
        _ => String::new(),
    }
}

/// Plausible's names of empty values.
fn display(dimension: &str, value: &str) -> String {
    match (dimension, value) {
        ("visit:referrer" | "visit:source", "") => "Direct / None".into(),
        ("visit:utm_source" | "visit:device" | "visit:country", "") => "(not set)".into(),
        _ => value.to_owned(),
    }
}

fn stored(dimension: &str, clause: &str) -> String {
    if !clause.is_empty() && display(dimension, "") == clause {
        String::new()
    } else {
        clause.to_owned()
    }
}

fn event_only(filter: &Value) -> bool {
    match filter[0].as_str().unwrap() {
        "and" | "or" => filter[1].as_array().unwrap().iter().all(event_only),
        "not" => event_only(&filter[1]),
        "has_done" | "has_not_done" => false,
        _ => filter[1].as_str().unwrap().starts_with("event:"),
    }
}

/// The few patterns the generator writes, matched by hand: `^/blog`, `b$`, `pro|free`.
fn regex_lite_match(pattern: &str, value: &str) -> bool {
    match pattern {
        "^/blog" => value.starts_with("/blog"),
        "b$" => value.ends_with('b'),
        "pro|free" => value.contains("pro") || value.contains("free"),
        other => panic!("the oracle knows no pattern {other}"),
    }
}

fn random_condition(rng: &mut StdRng) -> Value {
    let dimension = *[
        "event:page",
        "event:name",
        "event:props:plan",
        "visit:utm_source",
        "visit:entry_page",
        "visit:referrer",
        "visit:device",
        "visit:country",
    ]
    .choose(rng)
    .unwrap();
    let values: Vec<&str> = match dimension {
        "event:page" | "visit:entry_page" => PAGES.to_vec(),
        "event:name" => vec!["Signed Up", "pageview", "Clicked"],
        "event:props:plan" => vec!["pro", "free", "(none)", ""],
        "visit:utm_source" => vec!["news", "(not set)", "google"],
        "visit:device" => vec!["Desktop", "(not set)", "Tablet"],
        "visit:country" => vec!["DE", "(not set)", "JP"],
        _ => vec!["Direct / None", "https://google.com/"],
    };
    let op = *[
        "is",
        "is_not",
        "contains",
        "contains_not",
        "matches",
        "matches_not",
    ]
    .choose(rng)
    .unwrap();
    let clauses: Vec<&str> = if op.starts_with("matches") {
        vec![*["^/blog", "b$", "pro|free"].choose(rng).unwrap()]
    } else {
        {
            let n = rng.random_range(1..3);
            values.choose_multiple(rng, n)
        }
        .copied()
        .collect()
    };
    let clauses: Vec<&str> = if op.starts_with("contains") {
        clauses
            .into_iter()
            .map(|c| if c.len() > 3 { &c[1..3] } else { c })
            .collect()
    } else {
        clauses
    };
    if !op.starts_with("matches") && rng.random_bool(0.3) {
        json!([op, dimension, clauses, {"case_sensitive": false}])
    } else {
        json!([op, dimension, clauses])
    }
}

fn random_filter(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 1 { 1 } else { 6 }) {
        0..=2 => random_condition(rng),
        3 => json!([
            *["and", "or"].choose(rng).unwrap(),
            [random_filter(rng, depth + 1), random_filter(rng, depth + 1)]
        ]),
        4 => json!(["not", random_filter(rng, depth + 1)]),
        _ => {
            let mut inner = random_condition(rng);
            inner[1] = json!(*["event:page", "event:name"].choose(rng).unwrap());
            json!([*["has_done", "has_not_done"].choose(rng).unwrap(), inner])
        }
    }
}

async fn ask(state: &std::sync::Arc<AppState>, body: &Value) -> (u16, Value) {
    common::query_v2(state, "rk_acme", body).await
}

/// The answer's order (first metric descending, then the dimensions ascending) and a page
/// of it: the same rows as the whole answer's, and the whole answer's row count.
async fn check_order_and_pages(
    state: &std::sync::Arc<AppState>,
    body: &Value,
    answer: &Value,
    context: &str,
) {
    let rows = answer["results"].as_array().unwrap();
    let dimensions = body["dimensions"].as_array().unwrap();
    if !dimensions
        .iter()
        .any(|d| d.as_str().unwrap().starts_with("time"))
    {
        let first = |row: &Value| row["metrics"][0].as_f64().unwrap_or(f64::NEG_INFINITY);
        for pair in rows.windows(2) {
            assert!(
                first(&pair[0]) >= first(&pair[1]),
                "{context}: order {pair:?}"
            );
        }
    }
    let mut paged = body.clone();
    paged["pagination"] = json!({"limit": 3, "offset": 1});
    if paged.get("include").is_none() {
        paged["include"] = json!({});
    }
    paged["include"]["total_rows"] = json!(true);
    let (status, page) = ask(state, &paged).await;
    assert_eq!(status, 200, "{context}: {page}");
    let expected: Vec<&Value> = rows.iter().skip(1).take(3).collect();
    let got: Vec<&Value> = page["results"].as_array().unwrap().iter().collect();
    assert_eq!(got, expected, "{context}: a page of {body}");
    assert_eq!(page["meta"]["total_rows"], json!(rows.len()), "{context}");
}

#[tokio::test]
async fn the_compiler_agrees_with_an_independent_evaluation_on_random_queries() {
    let seed: u64 = std::env::var("QUERY_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let queries: usize = std::env::var("QUERY_MODEL_QUERIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!("QUERY_MODEL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "model").await;
    let (events, visits) = generate(&mut rng);
    load(&http, &url, &database, &events, &visits).await;
    let tenants = Tenants::parse(
        &format!("[[tenants]]\nid = \"acme\"\nwrite_keys = [\"wk\"]\nread_keys = [\"rk_acme\"]\n{GOALS}\n[[tenants]]\nid = \"globex\"\nwrite_keys = [\"wk2\"]\nread_keys = [\"rk_globex\"]\n"),
    )
    .unwrap();
    let state = std::sync::Arc::new(AppState::offline(tenants, &url, &database));
    for round in 0..queries {
        let zone_name = *ZONES.choose(&mut rng).unwrap();
        let zone = TimeZone::get(zone_name).unwrap();
        let window = *[
            jiff::civil::date(2026, 3, 5),
            jiff::civil::date(2026, 10, 20),
        ]
        .choose(&mut rng)
        .unwrap();
        let first = window.checked_add(rng.random_range(0..20).days()).unwrap();
        let last = first.checked_add(rng.random_range(0..10).days()).unwrap();
        let from_ms = first
            .to_zoned(zone.clone())
            .unwrap()
            .timestamp()
            .as_millisecond();
        let to_ms = last
            .checked_add(1.day())
            .unwrap()
            .to_zoned(zone.clone())
            .unwrap()
            .timestamp()
            .as_millisecond();
        let event_metrics = ["visitors", "persons", "pageviews", "events", "percentage"];
        let visit_metrics = ["visits", "sessions", "bounce_rate", "visit_duration"];
        let dimension_pool: Vec<&str> = if rng.random_bool(0.5) {
            vec![
                "event:page",
                "visit:utm_source",
                "visit:entry_page",
                "visit:country",
                "time:hour",
                "time:day",
                "time:week",
                "time:month",
            ]
        } else {
            vec![
                "event:name",
                "event:props:plan",
                "visit:referrer",
                "visit:device",
                "time:day",
                "event:page",
                "event:goal",
            ]
        };
        let n = rng.random_range(0..3);
        let mut dimensions: Vec<&str> = dimension_pool
            .choose_multiple(&mut rng, n)
            .copied()
            .collect();
        if dimensions.iter().filter(|d| d.starts_with("time")).count() > 1 {
            dimensions.retain(|d| !d.starts_with("time"));
        }
        let only_page_or_visit = dimensions
            .iter()
            .all(|d| !d.starts_with("event:") || *d == "event:page");
        let n = rng.random_range(1..3);
        let mut metrics: Vec<&str> = event_metrics
            .choose_multiple(&mut rng, n)
            .copied()
            .collect();
        if only_page_or_visit && rng.random_bool(0.6) {
            let n = rng.random_range(1..3);
            metrics.extend(visit_metrics.choose_multiple(&mut rng, n).copied());
        }
        let filters: Vec<Value> = (0..rng.random_range(0..3))
            .map(|_| random_filter(&mut rng, 0))
            .collect();
        if dimensions.contains(&"event:goal") && rng.random_bool(0.7) {
            metrics.push("conversion_rate");
        }
        let page_filtered = filters.iter().any(|f| f.to_string().contains("event:page"));
        if dimensions.iter().all(|d| d.starts_with("time"))
            && !page_filtered
            && rng.random_bool(0.3)
        {
            metrics.push("views_per_visit");
        }
        let mut body = json!({
            "site_id": TENANT, "metrics": metrics, "dimensions": dimensions, "filters": filters,
            "date_range": [first.to_string(), last.to_string()], "timezone": zone_name,
        });
        // Compared with the period of as many days just before (time buckets' pairing is
        // the handler tests').
        let compare = dimensions.iter().all(|d| !d.starts_with("time")) && rng.random_bool(0.3);
        if compare {
            body["include"] = json!({"comparisons": {"mode": "previous_period"}});
        }
        let (status, answer) = ask(&state, &body).await;
        assert_eq!(
            status, 200,
            "round {round} (seed {seed}): {body} -> {answer}"
        );
        let got: BTreeSet<String> = answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        let oracle = Oracle {
            events: &events,
            visits: &visits,
            zone: zone.clone(),
            from_ms,
            to_ms,
            first_date: first,
        };
        let answer_rows = oracle.answer(&metrics, &dimensions, &filters);
        let compared = compare.then(|| {
            let days = (last - first).get_days() as i64 + 1;
            let compared_first = first.checked_sub(days.days()).unwrap();
            Oracle {
                from_ms: compared_first
                    .to_zoned(zone.clone())
                    .unwrap()
                    .timestamp()
                    .as_millisecond(),
                to_ms: from_ms,
                first_date: compared_first,
                ..oracle
            }
            .answer(&metrics, &dimensions, &filters)
        });
        let expected = expected_rows(&metrics, &answer_rows, compared.as_ref());
        // Without dimensions there is always one row, zeros included.
        if dimensions.is_empty() && expected.is_empty() {
            assert_eq!(got.len(), 1, "round {round} (seed {seed}): {body}");
            continue;
        }
        assert_eq!(got, expected, "round {round} (seed {seed}): {body}");
        check_order_and_pages(
            &state,
            &body,
            &answer,
            &format!("round {round} (seed {seed})"),
        )
        .await;
    }
}
