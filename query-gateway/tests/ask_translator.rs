//! The offline translator on a table of questions, end to end: `POST /api/ask` over real
//! ClickHouse data this test loads, each answer's rows compared with an expected result that
//! an independent SQL query computes from the base tables (tenant, `FINAL`, tombstones and
//! late rows spelled out here, periods computed here with chrono).
//!
//! Out-of-coverage questions must be refused (`cannot_answer`), never answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc};
use clickstream_query_gateway::ask::AskLimits;
use clickstream_query_gateway::{AppState, router};
use schemas::tenants::Tenants;
use serde_json::{Value, json};
use tower::ServiceExt;

/// A tiny deterministic generator (the data must be the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

const PAGES: [&str; 5] = ["/", "/pricing", "/docs", "/blog/launch", "/signup"];
const TRACKS: [&str; 4] = [
    "Signed Up",
    "Checkout Completed",
    "Added To Cart",
    "Invite Sent",
];
const REFERRERS: [&str; 3] = ["https://google.com", "https://news.ycombinator.com", ""];
const SOURCES: [&str; 3] = ["newsletter", "twitter", ""];

/// 70 days of a tenant's events and sessions ending now: page views, screens, track calls,
/// identify calls (not activity), late rows (counted nowhere), replaced versions and merged-away
/// sessions (tombstones).
fn tenant_rows(tenant: &str, seed: u64, now: i64) -> (Vec<String>, Vec<String>) {
    let mut rng = Lcg(seed);
    let (mut events, mut sessions) = (Vec::new(), Vec::new());
    for person in 0..40u64 {
        let anonymous = format!("a{person}");
        // One user id with capitals: ids are matched exactly.
        let user = match person {
            39 => "User-39".to_owned(),
            n if n % 3 == 0 => format!("u{n}"),
            _ => String::new(),
        };
        let person_id = format!("p{person}");
        for day in 0..70i64 {
            if rng.next(4) != 0 {
                continue;
            }
            let start = now - day * 86_400 - rng.next(80_000) as i64 - 600;
            let session_id = format!("{tenant}-s{person}-{day}");
            let count = 1 + rng.next(6);
            let mut time = start;
            let mut first_path = String::new();
            for n in 0..count {
                let id = format!("{tenant}-m{person}-{day}-{n}");
                let (kind, name, path) = match rng.next(10) {
                    0..=4 => (
                        "page",
                        String::new(),
                        PAGES[rng.next(5) as usize].to_owned(),
                    ),
                    5 => ("screen", "Home Screen".to_owned(), String::new()),
                    6..=8 => (
                        "track",
                        TRACKS[rng.next(4) as usize].to_owned(),
                        String::new(),
                    ),
                    _ => ("identify", String::new(), String::new()),
                };
                if first_path.is_empty() && kind == "page" {
                    first_path = path.clone();
                }
                let late = u8::from(rng.next(25) == 0);
                let row = |path: &str, version: u64| {
                    format!(
                        "('{tenant}', '{id}', '{kind}', '{name}', '{anonymous}', '{user}', toDateTime({time}), {time}000, '{path}', '{person_id}', '{session_id}', {late}, {version})"
                    )
                };
                // A replaced version: only the newer one may count.
                if rng.next(10) == 0 {
                    events.push(row("/replaced", 1));
                    events.push(row(&path, 2));
                } else {
                    events.push(row(&path, 1));
                }
                time = (time + rng.next(600) as i64).min(now - 1);
            }
            let deleted = u8::from(rng.next(15) == 0);
            sessions.push(format!(
                "('{tenant}', '{session_id}', '{person_id}', toDateTime({start}), {start}000, {}, {}, '{first_path}', '{}', '{}', '{}', '{}', {deleted}, 1)",
                (time - start) * 1000,
                rng.next(2),
                PAGES[rng.next(5) as usize],
                REFERRERS[rng.next(3) as usize],
                SOURCES[rng.next(3) as usize],
                if rng.next(2) == 0 { "launch" } else { "" },
            ));
        }
    }
    (events, sessions)
}

async fn load(http: &reqwest::Client, url: &str, database: &str, now: i64) {
    for (tenant, seed) in [("acme", 7), ("globex", 8), ("initech", 9)] {
        let (events, sessions) = tenant_rows(tenant, seed, now);
        for chunk in events.chunks(2000) {
            common::sql(http, url, &format!(
                "INSERT INTO {database}.events (tenant, message_id, type, name, anonymous_id, user_id, event_time, event_time_ms, path, person_id, session_id, late, version) VALUES {}",
                chunk.join(", ")
            ))
            .await;
        }
        common::sql(http, url, &format!(
            "INSERT INTO {database}.sessions (tenant, session_id, person_id, start_time, start_ms, duration_ms, is_bounce, entry_path, exit_path, entry_referrer, utm_source, utm_campaign, deleted, version) VALUES {}",
            sessions.join(", ")
        ))
        .await;
    }
}

/// Periods, computed here: `[from, to)` in UTC seconds from local days of `tz`.
struct Days2 {
    today: NaiveDate,
    tz: chrono_tz::Tz,
}

impl Days2 {
    fn midnight(&self, day: NaiveDate) -> i64 {
        self.tz
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .timestamp()
    }
    /// The `n` days ending today.
    fn last(&self, n: u64) -> (i64, i64) {
        self.span(self.today - Days::new(n - 1), self.today)
    }
    fn span(&self, first: NaiveDate, last: NaiveDate) -> (i64, i64) {
        (self.midnight(first), self.midnight(last + Days::new(1)))
    }
    fn ago(&self, n: u64) -> NaiveDate {
        self.today - Days::new(n)
    }
    fn last_week(&self) -> (i64, i64) {
        let monday = self.today - Days::new(u64::from(self.today.weekday().num_days_from_monday()));
        self.span(monday - Days::new(7), monday - Days::new(1))
    }
    fn this_week(&self) -> (i64, i64) {
        let monday = self.today - Days::new(u64::from(self.today.weekday().num_days_from_monday()));
        self.span(monday, self.today)
    }
    fn this_month(&self) -> (i64, i64) {
        self.span(self.today.with_day(1).unwrap(), self.today)
    }
    fn last_month(&self) -> (i64, i64) {
        let first_this = self.today.with_day(1).unwrap();
        let last = first_this - Days::new(1);
        self.span(last.with_day(1).unwrap(), last)
    }
    fn this_year(&self) -> (i64, i64) {
        self.span(self.today.with_ordinal(1).unwrap(), self.today)
    }
}

fn within(column: &str, (from, to): (i64, i64)) -> String {
    format!("{column} >= toDateTime({from}) AND {column} < toDateTime({to})")
}

/// The period of equal length just before `[from, to)` (whole days, so seconds suffice
/// when no DST change falls inside, as in UTC).
fn before((from, to): (i64, i64)) -> (i64, i64) {
    (from - (to - from), from)
}

enum Expect {
    /// Rows equal to the oracle's, in order.
    Rows(String),
    /// Refused as out of coverage.
    CannotAnswer,
}

struct Question {
    tenant_key: &'static str,
    text: String,
    expect: Expect,
}

#[allow(clippy::too_many_lines)]
fn questions(db: &str, utc: &Days2, berlin: &Days2) -> Vec<Question> {
    let events = format!("{db}.events FINAL WHERE tenant = 'acme' AND late = 0");
    let sessions = format!("{db}.sessions FINAL WHERE tenant = 'acme' AND deleted = 0");
    let act = "type IN ('page', 'screen', 'track')";
    let pv = "type IN ('page', 'screen')";
    let loc = "if(type = 'screen', name, path)";
    let visitor = "if(anonymous_id != '', anonymous_id, user_id)";
    let bounce = "round(100 * sum(is_bounce) / greatest(count(), 1), 1)";
    let duration = "round(sum(duration_ms) / greatest(count(), 1) / 1000, 1)";
    let d = |n| utc.ago(n).to_string();
    let mut q = Vec::new();
    let mut ask = |text: String, oracle: String| {
        q.push(Question {
            tenant_key: "rk_acme",
            text,
            expect: Expect::Rows(oracle),
        });
    };
    // Totals.
    let count_events = |what: &str, period| {
        format!(
            "SELECT {what} FROM {events} AND {act} AND {}",
            within("event_time", period)
        )
    };
    let count_sessions = |what: &str, period| {
        format!(
            "SELECT {what} FROM {sessions} AND {}",
            within("start_time", period)
        )
    };
    ask(
        "How many page views in the last 7 days?".into(),
        count_events(&format!("countIf({pv})"), utc.last(7)),
    );
    ask(
        "How many page views yesterday?".into(),
        count_events(&format!("countIf({pv})"), utc.span(utc.ago(1), utc.ago(1))),
    );
    ask(
        "How many page views today?".into(),
        count_events(&format!("countIf({pv})"), utc.last(1)),
    );
    ask(
        "Number of events last week".into(),
        count_events("count()", utc.last_week()),
    );
    ask(
        "How many events this month?".into(),
        count_events("count()", utc.this_month()),
    );
    ask(
        "How many events last month?".into(),
        count_events("count()", utc.last_month()),
    );
    ask(
        "Unique visitors in the last 30 days".into(),
        count_events(&format!("uniqExact({visitor})"), utc.last(30)),
    );
    ask(
        "How many unique visitors yesterday?".into(),
        count_events(
            &format!("uniqExact({visitor})"),
            utc.span(utc.ago(1), utc.ago(1)),
        ),
    );
    ask(
        "How many persons were active in the last 14 days?".into(),
        count_events("uniqExact(person_id)", utc.last(14)),
    );
    ask(
        "How many users did we have this week?".into(),
        count_events("uniqExact(person_id)", utc.this_week()),
    );
    ask(
        "How many sessions in the last 7 days?".into(),
        count_sessions("count()", utc.last(7)),
    );
    ask(
        "Sessions last month".into(),
        count_sessions("count()", utc.last_month()),
    );
    ask(
        "What is the bounce rate in the last 30 days?".into(),
        count_sessions(bounce, utc.last(30)),
    );
    ask(
        "Bounce rate yesterday".into(),
        count_sessions(bounce, utc.span(utc.ago(1), utc.ago(1))),
    );
    ask(
        "Average session duration in the last 7 days".into(),
        count_sessions(duration, utc.last(7)),
    );
    ask(
        "How long are sessions this month?".into(),
        count_sessions(duration, utc.this_month()),
    );
    ask(
        "How many Signed Up events in the last 30 days?".into(),
        count_events(
            "countIf(type = 'track' AND name = 'Signed Up')",
            utc.last(30),
        ),
    );
    ask(
        "How many times was 'checkout completed' triggered last week?".into(),
        count_events(
            "countIf(type = 'track' AND name = 'Checkout Completed')",
            utc.last_week(),
        ),
    );
    ask(
        "How many views of /pricing in the last 14 days?".into(),
        count_events(
            &format!("countIf({pv} AND {loc} = '/pricing')"),
            utc.last(14),
        ),
    );
    ask(
        "How many visitors viewed /docs in the last 30 days?".into(),
        count_events(
            &format!("uniqExactIf({visitor}, {pv} AND {loc} = '/docs')"),
            utc.last(30),
        ),
    );
    ask(
        format!("Page views between {} and {}", d(20), d(10)),
        count_events(
            &format!("countIf({pv})"),
            utc.span(utc.ago(20), utc.ago(10)),
        ),
    );
    ask(
        format!("How many events on {}?", d(3)),
        count_events("count()", utc.span(utc.ago(3), utc.ago(3))),
    );
    ask(
        format!("Unique visitors since {}", d(40)),
        count_events(
            &format!("uniqExact({visitor})"),
            utc.span(utc.ago(40), utc.today),
        ),
    );
    ask(
        "How many people added to cart in the last 7 days?".into(),
        count_events(
            "uniqExactIf(person_id, type = 'track' AND name = 'Added To Cart')",
            utc.last(7),
        ),
    );
    ask(
        "Page views this year".into(),
        count_events(&format!("countIf({pv})"), utc.this_year()),
    );
    ask(
        "Views of Home Screen in the last 30 days".into(),
        count_events(
            &format!("countIf({pv} AND {loc} = 'Home Screen')"),
            utc.last(30),
        ),
    );
    ask(
        "How many sessions?".into(),
        count_sessions("count()", utc.last(7)),
    );
    ask(
        "Total page views in the past 3 weeks".into(),
        count_events(&format!("countIf({pv})"), utc.last(21)),
    );
    // Top lists.
    let top_events = |key: &str, only: &str, period, n: u32| {
        format!(
            "SELECT {key} AS k, count() AS c FROM {events} AND {only} AND {} GROUP BY k ORDER BY c DESC, k LIMIT {n}",
            within("event_time", period)
        )
    };
    let top_sessions = |key: &str, period, n: u32| {
        format!(
            "SELECT {key} AS k, count() AS c FROM {sessions} AND {key} != '' AND {} GROUP BY k ORDER BY c DESC, k LIMIT {n}",
            within("start_time", period)
        )
    };
    ask(
        "What were the top pages in the last 7 days?".into(),
        top_events(loc, pv, utc.last(7), 10),
    );
    ask(
        "Top 3 pages last month".into(),
        top_events(loc, pv, utc.last_month(), 3),
    );
    ask(
        "Most popular events this month".into(),
        top_events("name", "type = 'track'", utc.this_month(), 10),
    );
    ask(
        "Top referrers in the last 30 days".into(),
        top_sessions("entry_referrer", utc.last(30), 10),
    );
    ask(
        "Which UTM sources brought the most sessions last month?".into(),
        top_sessions("utm_source", utc.last_month(), 10),
    );
    ask(
        "Top campaigns in the last 30 days".into(),
        top_sessions("utm_campaign", utc.last(30), 10),
    );
    ask(
        "Top landing pages last week".into(),
        top_sessions("entry_path", utc.last_week(), 10),
    );
    ask(
        "Top exit pages in the last 14 days".into(),
        top_sessions("exit_path", utc.last(14), 10),
    );
    ask(
        "Top 5 events yesterday".into(),
        top_events(
            "name",
            "type = 'track'",
            utc.span(utc.ago(1), utc.ago(1)),
            5,
        ),
    );
    ask(
        "Most visited pages this week".into(),
        top_events(loc, pv, utc.this_week(), 10),
    );
    ask(
        "Which pages were viewed most in the last 60 days?".into(),
        top_events(loc, pv, utc.last(60), 10),
    );
    // Series.
    let series_events = |bucket: &str, value: &str, period| {
        format!(
            "SELECT {bucket} AS b, {value} AS v FROM {events} AND {act} AND {} GROUP BY b ORDER BY b",
            within("event_time", period)
        )
    };
    let series_sessions = |bucket: &str, value: &str, period| {
        format!(
            "SELECT {bucket} AS b, {value} AS v FROM {sessions} AND {} GROUP BY b ORDER BY b",
            within("start_time", period)
        )
    };
    ask(
        "Page views per day in the last 14 days".into(),
        series_events(
            "toDate(event_time, 'UTC')",
            &format!("countIf({pv})"),
            utc.last(14),
        ),
    );
    ask(
        "Daily unique visitors last month".into(),
        series_events(
            "toDate(event_time, 'UTC')",
            &format!("uniqExact({visitor})"),
            utc.last_month(),
        ),
    );
    ask(
        "Events per hour yesterday".into(),
        series_events(
            "toStartOfHour(event_time, 'UTC')",
            "count()",
            utc.span(utc.ago(1), utc.ago(1)),
        ),
    );
    ask(
        "Sessions per day in the last 7 days".into(),
        series_sessions("toDate(start_time, 'UTC')", "count()", utc.last(7)),
    );
    ask(
        "Weekly page views in the last 8 weeks".into(),
        series_events(
            "toMonday(toDate(event_time, 'UTC'))",
            &format!("countIf({pv})"),
            utc.last(56),
        ),
    );
    ask(
        "Bounce rate per day this month".into(),
        series_sessions("toDate(start_time, 'UTC')", bounce, utc.this_month()),
    );
    ask(
        "Signed Up events per day in the last 30 days".into(),
        series_events(
            "toDate(event_time, 'UTC')",
            "countIf(type = 'track' AND name = 'Signed Up')",
            utc.last(30),
        ),
    );
    ask(
        "Visitors over time in the last 30 days".into(),
        series_events(
            "toDate(event_time, 'UTC')",
            &format!("uniqExact({visitor})"),
            utc.last(30),
        ),
    );
    ask(
        format!("Monthly events since {}", d(60)),
        series_events(
            "toStartOfMonth(toDate(event_time, 'UTC'))",
            "count()",
            utc.span(utc.ago(60), utc.today),
        ),
    );
    ask(
        "Persons per week over the last 4 weeks".into(),
        series_events(
            "toMonday(toDate(event_time, 'UTC'))",
            "uniqExact(person_id)",
            utc.last(28),
        ),
    );
    // Comparisons.
    let compare_events = |value: &str, period: (i64, i64)| {
        let previous = before(period);
        format!(
            "SELECT {a}, {b} FROM {events} AND {act} AND {}",
            within("event_time", (previous.0, period.1)),
            a = value.replace("COND", &within("event_time", period)),
            b = value.replace("COND", &within("event_time", previous)),
        )
    };
    let compare_sessions = |value: &str, period: (i64, i64)| {
        let previous = before(period);
        format!(
            "SELECT {a}, {b} FROM {sessions} AND {}",
            within("start_time", (previous.0, period.1)),
            a = value.replace("COND", &within("start_time", period)),
            b = value.replace("COND", &within("start_time", previous)),
        )
    };
    ask(
        "Compare page views with the previous period".into(),
        compare_events(&format!("countIf({pv} AND COND)"), utc.last(7)),
    );
    ask(
        "Sessions in the last 30 days vs the previous period".into(),
        compare_sessions("countIf(COND)", utc.last(30)),
    );
    ask(
        "How did unique visitors change last week compared to the week before?".into(),
        compare_events(&format!("uniqExactIf({visitor}, COND)"), utc.last_week()),
    );
    ask(
        "Compare bounce rate yesterday with the day before".into(),
        compare_sessions(
            "round(100 * sumIf(is_bounce, COND) / greatest(countIf(COND), 1), 1)",
            utc.span(utc.ago(1), utc.ago(1)),
        ),
    );
    ask(
        "Compare Signed Up events this month with the previous period".into(),
        compare_events(
            "countIf(type = 'track' AND name = 'Signed Up' AND COND)",
            utc.this_month(),
        ),
    );
    ask(
        "Growth of events in the last 14 days".into(),
        compare_events("countIf(COND)", utc.last(14)),
    );
    // Funnels.
    let funnel = |conditions: &[&str], period| {
        let reached: Vec<String> = (1..=conditions.len())
            .map(|k| format!("countIf(level >= {k})"))
            .collect();
        format!(
            "SELECT {} FROM (SELECT person_id, windowFunnel(86400)(event_time, {}) AS level FROM {events} AND {act} AND {} GROUP BY person_id)",
            reached.join(", "),
            conditions.join(", "),
            within("event_time", period)
        )
    };
    let page = |p: &str| {
        format!("(type IN ('page', 'screen') AND if(type = 'screen', name, path) = '{p}')")
    };
    let track = |n: &str| format!("(type = 'track' AND name = '{n}')");
    ask(
        "Funnel from /pricing to Signed Up in the last 30 days".into(),
        funnel(&[&page("/pricing"), &track("Signed Up")], utc.last(30)),
    );
    ask(
        "Conversion from / to /pricing to Checkout Completed last month".into(),
        funnel(
            &[&page("/"), &page("/pricing"), &track("Checkout Completed")],
            utc.last_month(),
        ),
    );
    ask(
        "funnel: added to cart then checkout completed this month".into(),
        funnel(
            &[&track("Added To Cart"), &track("Checkout Completed")],
            utc.this_month(),
        ),
    );
    ask(
        "What is the conversion rate from /signup to signed up?".into(),
        funnel(&[&page("/signup"), &track("Signed Up")], utc.last(7)),
    );
    // Did one thing but not another.
    let but_not = |did: &str, not: &str, period| {
        format!(
            "SELECT count() FROM (SELECT person_id FROM {events} AND {} GROUP BY person_id HAVING max({did}) = 1 AND max({not}) = 0)",
            within("event_time", period)
        )
    };
    ask(
        "How many people signed up but not checkout completed in the last 30 days?".into(),
        but_not(
            &track("Signed Up"),
            &track("Checkout Completed"),
            utc.last(30),
        ),
    );
    ask(
        "Who viewed /pricing but never signed up last week?".into(),
        but_not(&page("/pricing"), &track("Signed Up"), utc.last_week()),
    );
    ask(
        "People who added to cart without checkout completed this month".into(),
        but_not(
            &track("Added To Cart"),
            &track("Checkout Completed"),
            utc.this_month(),
        ),
    );
    // Retention: each person's weeks, joined to the first one (written as an ARRAY JOIN here,
    // not the translator's JOIN).
    let retention = |period| {
        format!(
            "SELECT first_week, toInt32((toRelativeDayNum(week) - toRelativeDayNum(first_week)) / 7) AS later, count() \
         FROM (SELECT person_id, groupUniqArray(toMonday(toDate(event_time, 'UTC'))) AS weeks, arrayReduce('min', weeks) AS first_week \
               FROM {events} AND {act} AND {} GROUP BY person_id) ARRAY JOIN weeks AS week \
         GROUP BY first_week, later ORDER BY first_week, later",
            within("event_time", period)
        )
    };
    ask(
        "Weekly retention over the last 8 weeks".into(),
        retention(utc.last(56)),
    );
    ask("Retention last month".into(), retention(utc.last_month()));
    ask("Do visitors come back?".into(), retention(utc.last(56)));
    // One person's activity.
    let activity = |id: &str, period: Option<(i64, i64)>| {
        format!(
            "SELECT event_time, type, if(type = 'track', name, if(type = 'screen', name, path)), session_id FROM {events} \
         AND person_id IN (SELECT person_id FROM {events} AND (user_id = '{id}' OR anonymous_id = '{id}' OR person_id = '{id}')){} \
         ORDER BY event_time, message_id LIMIT 200",
            period
                .map(|p| format!(" AND {}", within("event_time", p)))
                .unwrap_or_default()
        )
    };
    ask("Show the activity of user u3".into(), activity("u3", None));
    ask(
        "What did a7 do yesterday?".into(),
        activity("a7", Some(utc.span(utc.ago(1), utc.ago(1)))),
    );
    ask(
        "Timeline of person p5 last week".into(),
        activity("p5", Some(utc.last_week())),
    );
    ask(
        "Activity of u12 in the last 14 days".into(),
        activity("u12", Some(utc.last(14))),
    );
    ask(
        "Show the activity of user User-39 in the last 30 days".into(),
        activity("User-39", Some(utc.last(30))),
    );
    // A tenant in Berlin: local days.
    let berlin_events =
        format!("{db}.events FINAL WHERE tenant = 'initech' AND late = 0 AND {act}");
    q.push(Question {
        tenant_key: "rk_initech",
        text: "Page views per day in the last 7 days".into(),
        expect: Expect::Rows(format!(
            "SELECT toDate(event_time, 'Europe/Berlin') AS b, countIf({pv}) FROM {berlin_events} AND {} GROUP BY b ORDER BY b",
            within("event_time", berlin.last(7))
        )),
    });
    q.push(Question {
        tenant_key: "rk_initech",
        text: "How many events yesterday?".into(),
        expect: Expect::Rows(format!(
            "SELECT count() FROM {berlin_events} AND {}",
            within("event_time", berlin.span(berlin.ago(1), berlin.ago(1)))
        )),
    });
    // Out of coverage: refused, never answered.
    for text in [
        "What is the meaning of life?",
        "Which country do most visitors come from?",
        "How many sessions came from Germany last week?",
        "Page views per browser last week",
        "What was our revenue last month?",
        "Predict next month's signups",
        "Why did traffic drop yesterday?",
        "Funnel from /pricing to Purchase",
        "How many people bought something but not Signed Up?",
        "Average order value this month",
        "Top pages on mobile last week",
        // Traps where a dropped word would give a wrong number.
        "What is the bounce rate of /pricing?",
        "Sessions per day for /pricing",
        "Top pages of people who signed up",
        "Page views not on /pricing last week",
        "How many new visitors last week?",
        "How many returning visitors yesterday?",
        "Page views in 2025",
        "Sessions by referrer last month",
        "Page views per page this week",
        "Visitors who did not bounce",
    ] {
        q.push(Question {
            tenant_key: "rk_acme",
            text: text.into(),
            expect: Expect::CannotAnswer,
        });
    }
    q
}

async fn oracle(http: &reqwest::Client, url: &str, sql: &str) -> Vec<Vec<Value>> {
    let url = format!(
        "{}/?output_format_json_quote_64bit_integers=0",
        url.trim_end_matches('/')
    );
    let text = common::sql(http, &url, &format!("{sql} FORMAT JSONCompact")).await;
    let value: Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(value["data"].clone()).unwrap()
}

/// Numbers compared as numbers (a count may come back as UInt64 in one query and Int32 in
/// another), everything else as it is.
fn same(a: &[Vec<Value>], b: &[Vec<Value>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(u, v)| match (u.as_f64(), v.as_f64()) {
                        (Some(u), Some(v)) => (u - v).abs() < 1e-9,
                        _ => u == v,
                    })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_translator_answers_its_questions_and_refuses_the_rest() {
    let url = common::clickhouse_url();
    let http = reqwest::Client::new();
    let database = common::create_database(&http, &url, "ask_translator").await;
    let now = Utc::now().timestamp();
    load(&http, &url, &database, now).await;
    let tenants = Tenants::parse(
        "[[tenants]]\nid='acme'\nwrite_keys=['wk_acme']\nread_keys=['rk_acme']\n\
         [[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nread_keys=['rk_globex']\n\
         [[tenants]]\nid='initech'\nwrite_keys=['wk_initech']\nread_keys=['rk_initech']\ntime_zone='Europe/Berlin'\n",
    )
    .unwrap();
    let limits = AskLimits {
        questions_per_minute: std::num::NonZeroU32::new(1000).unwrap(),
        ..AskLimits::default()
    };
    let (ask, metrics) = common::ask_service(&url, &database, None, limits);
    let state = Arc::new(AppState {
        tenants,
        clickhouse: clickhouse::Client::default()
            .with_url(&url)
            .with_database(&database)
            .with_validation(false),
        live: Default::default(),
        live_stream_lifetime: std::time::Duration::from_secs(60),
        ask,
        metrics,
    });
    let today = Utc::now().date_naive();
    let utc = Days2 {
        today,
        tz: chrono_tz::Tz::UTC,
    };
    let berlin_tz: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
    let berlin = Days2 {
        today: Utc::now().with_timezone(&berlin_tz).date_naive(),
        tz: berlin_tz,
    };
    let questions = questions(&database, &utc, &berlin);
    let (mut in_coverage, mut passed, mut refused_right, mut out_of_coverage) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for question in &questions {
        let request = Request::post("/api/ask")
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", question.tenant_key),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json!({"question": question.text}).to_string()))
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{}", question.text);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        let rows: Vec<Vec<Value>> = serde_json::from_value(answer["rows"].clone()).unwrap();
        match &question.expect {
            Expect::Rows(sql) => {
                in_coverage += 1;
                let expected = oracle(&http, &url, sql).await;
                if answer["outcome"] == "answered" && same(&rows, &expected) {
                    passed += 1;
                } else {
                    failures.push(format!(
                        "{}\n  outcome {} / {}\n  sql {}\n  got {:?}\n  expected {:?}",
                        question.text,
                        answer["outcome"],
                        answer["summary"],
                        answer["sql"],
                        rows.iter().take(5).collect::<Vec<_>>(),
                        expected.iter().take(5).collect::<Vec<_>>()
                    ));
                }
            }
            Expect::CannotAnswer => {
                out_of_coverage += 1;
                if answer["outcome"] == "cannot_answer" && rows.is_empty() {
                    assert!(
                        !answer["follow_ups"].as_array().unwrap().is_empty(),
                        "offers questions"
                    );
                    refused_right += 1;
                } else {
                    failures.push(format!(
                        "{}: answered although out of coverage: {}",
                        question.text, answer["summary"]
                    ));
                }
            }
        }
    }
    println!(
        "\noffline translator: {passed}/{in_coverage} questions in coverage answered exactly ({:.1} %); {refused_right}/{out_of_coverage} out-of-coverage questions refused",
        100.0 * passed as f64 / in_coverage as f64
    );
    assert!(in_coverage >= 60, "{in_coverage} questions");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    let logged = common::sql(
        &http,
        &url,
        &format!("SELECT count() FROM {database}.ask_log"),
    )
    .await;
    // ask_log rows are written in the background; most are in by now.
    assert!(
        logged.trim().parse::<usize>().unwrap() > 0,
        "ask_log has rows"
    );
    common::sql(&http, &url, &format!("DROP DATABASE {database}")).await;
}
