//! Weeks of history for a site, as ClickHouse rows of `events` and `sessions` (JSONEachRow
//! objects): what the engine would have written for a shop with a SaaS side. The demo seeds
//! its tenant with it (`loadgen --seed-history-days`), so the dashboard's retention grid and
//! comparisons have weeks to show; the Ask question tables' tests run on it (their writers
//! were given its description: README, "The Ask question tables").
//!
//! The rows are written straight to ClickHouse, not sent through the pipeline: the engine
//! keeps an event more than its lateness (72 h) old as late, counted nowhere, so history
//! cannot arrive as events.

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// What to generate.
#[derive(Debug, Clone)]
pub struct History {
    /// The tenant's id.
    pub tenant: String,
    /// The site's host (events' URLs).
    pub domain: String,
    /// The zone whose days the traffic follows.
    pub zone: Tz,
    /// The first local day.
    pub first_day: NaiveDate,
    /// No visit starts later than an hour before this instant (Unix seconds).
    pub until_secs: i64,
    /// The same seed gives the same rows.
    pub seed: u64,
    /// Visits a day: uniformly from this range.
    pub visits_per_day: std::ops::Range<u32>,
    /// Prefix of message and session ids (`shop` gives `shop-s1-e0`): history never reuses
    /// the ids of live traffic.
    pub id_prefix: String,
    /// Prefix of visitors' anonymous ids (`anon` gives `anon-0001`).
    pub visitor_prefix: String,
    /// Prefix of the user ids the first 60 visitors identify as (`demo-user` gives
    /// `demo-user-1`).
    pub user_prefix: String,
}

const PAGES: [&str; 10] = [
    "/",
    "/pricing",
    "/features",
    "/docs",
    "/docs/getting-started",
    "/blog",
    "/blog/black-friday",
    "/signup",
    "/checkout",
    "/about",
];
const SCREENS: [&str; 2] = ["Home Screen", "Settings Screen"];

/// How a visit arrives: source, channel, referrer, UTM source and medium, and whether it
/// carries the month's campaign.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    source: &'static str,
    channel: &'static str,
    referrer: &'static str,
    utm_source: &'static str,
    utm_medium: &'static str,
    tagged: bool,
}

const fn arrival(
    source: &'static str,
    channel: &'static str,
    referrer: &'static str,
    utm: (&'static str, &'static str),
    tagged: bool,
) -> Arrival {
    Arrival {
        source,
        channel,
        referrer,
        utm_source: utm.0,
        utm_medium: utm.1,
        tagged,
    }
}

const ARRIVALS: [Arrival; 13] = [
    arrival("", "Direct", "", ("", ""), false),
    arrival("", "Direct", "", ("", ""), false),
    arrival(
        "Google",
        "Organic Search",
        "https://www.google.com/",
        ("", ""),
        false,
    ),
    arrival(
        "Google",
        "Organic Search",
        "https://www.google.de/",
        ("", ""),
        false,
    ),
    arrival(
        "Google",
        "Paid Search",
        "https://www.google.com/",
        ("google", "cpc"),
        true,
    ),
    arrival(
        "Bing",
        "Organic Search",
        "https://www.bing.com/",
        ("", ""),
        false,
    ),
    arrival(
        "DuckDuckGo",
        "Organic Search",
        "https://duckduckgo.com/",
        ("", ""),
        false,
    ),
    arrival(
        "Facebook",
        "Organic Social",
        "https://www.facebook.com/",
        ("facebook", "social"),
        true,
    ),
    arrival(
        "Twitter",
        "Organic Social",
        "https://t.co/abc",
        ("", ""),
        false,
    ),
    arrival(
        "LinkedIn",
        "Organic Social",
        "https://www.linkedin.com/feed/",
        ("", ""),
        false,
    ),
    arrival(
        "Reddit",
        "Organic Social",
        "https://www.reddit.com/r/shops/",
        ("", ""),
        false,
    ),
    arrival(
        "Hacker News",
        "Referral",
        "https://news.ycombinator.com/item?id=1",
        ("", ""),
        false,
    ),
    arrival("newsletter", "Email", "", ("newsletter", "email"), true),
];

/// (device, browser, browser_version, os, os_version)
type Client = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);
const CLIENTS: [Client; 8] = [
    ("Desktop", "Chrome", "131.0", "Windows", "10"),
    ("Desktop", "Firefox", "133.0", "Windows", "10"),
    ("Desktop", "Edge", "131.0", "Windows", "11"),
    ("Desktop", "Safari", "18.1", "Mac OS X", "10.15"),
    ("Desktop", "Chrome", "131.0", "Linux", ""),
    ("Mobile", "Safari", "18.1", "iOS", "18.1"),
    ("Mobile", "Chrome", "131.0", "Android", "14"),
    ("Tablet", "Safari", "17.6", "iOS", "17.6"),
];

/// (country, region, city)
type Place = (&'static str, &'static str, &'static str);
const PLACES: [Place; 10] = [
    ("US", "California", "San Francisco"),
    ("US", "New York", "New York"),
    ("DE", "Berlin", "Berlin"),
    ("DE", "Bavaria", "Munich"),
    ("GB", "England", "London"),
    ("FR", "Île-de-France", "Paris"),
    ("IN", "Maharashtra", "Mumbai"),
    ("BR", "São Paulo", "São Paulo"),
    ("JP", "Tokyo", "Tokyo"),
    ("CA", "Ontario", "Toronto"),
];

/// Visitors: `<visitor prefix>-0001` … `-0180`; the first 60 identify as `<user prefix>-N`
/// after their first event.
const VISITORS: usize = 180;
const IDENTIFIED: usize = 60;

/// A visit's attributes, shared by its events and its session row.
#[derive(Debug)]
struct Visit<'a> {
    history: &'a History,
    id: String,
    visitor: usize,
    /// The mobile app (screens, not pages).
    app: bool,
    arrival: Arrival,
    campaign: &'static str,
    client: Client,
    place: Place,
}

impl History {
    /// The rows: (`events`, `sessions`).
    pub fn rows(&self) -> (Vec<Value>, Vec<Value>) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let (mut events, mut sessions) = (Vec::new(), Vec::new());
        let mut visit_number = 0usize;
        let mut day = self.first_day;
        while let Some(midnight) = self.midnight(day).filter(|m| *m < self.until_secs) {
            let Some(next) = day.succ_opt() else { break };
            // A day is 23 to 25 hours long where clocks change.
            let length = self.midnight(next).map_or(86_400, |end| end - midnight);
            let count = if self.visits_per_day.is_empty() {
                0
            } else {
                rng.random_range(self.visits_per_day.clone())
            };
            for _ in 0..count {
                visit_number += 1;
                let start_secs = midnight + rng.random_range(0..(length - 400).max(1));
                if start_secs >= self.until_secs - 3600 {
                    continue;
                }
                let visit = self.visit(&mut rng, visit_number, day);
                let (visit_events, session) = visit.rows(&mut rng, start_secs * 1000);
                events.extend(visit_events);
                sessions.push(session);
            }
            day = next;
        }
        (events, sessions)
    }

    /// The day's first instant: midnight, or 01:00 where a clock change skips midnight.
    fn midnight(&self, day: NaiveDate) -> Option<i64> {
        [0, 1].into_iter().find_map(|hour| {
            self.zone
                .from_local_datetime(&day.and_hms_opt(hour, 0, 0)?)
                .earliest()
                .map(|t| t.timestamp())
        })
    }

    fn visit(&self, rng: &mut StdRng, number: usize, day: NaiveDate) -> Visit<'_> {
        let arrival = *ARRIVALS.choose(rng).unwrap_or(&ARRIVALS[0]);
        let campaign = match (arrival.tagged, day.month()) {
            (true, 5 | 6) => "spring_sale",
            (true, 10) => "launch_week",
            (true, 11) => "black_friday",
            _ => "",
        };
        let visitor = rng.random_range(1..=VISITORS);
        let app = rng.random_bool(0.1);
        Visit {
            history: self,
            id: format!("{}-s{number}", self.id_prefix),
            visitor,
            app,
            arrival,
            campaign,
            client: if app {
                CLIENTS[5]
            } else {
                *CLIENTS.choose(rng).unwrap_or(&CLIENTS[0])
            },
            place: PLACES[(visitor * 7 + 3) % PLACES.len()],
        }
    }
}

impl Visit<'_> {
    /// Its events (1 to 6: page or screen views, track calls from the page last viewed),
    /// and its session row as the engine writes it.
    fn rows(&self, rng: &mut StdRng, start_ms: i64) -> (Vec<Value>, Value) {
        let app = self.app;
        let steps = rng.random_range(1..=6usize);
        let (mut events, mut paths) = (Vec::new(), Vec::<String>::new());
        let mut time_ms = start_ms;
        let mut last_ms = start_ms;
        for n in 0..steps {
            let (kind, name, props) = if n == 0 || rng.random_bool(0.55) {
                if app {
                    (
                        "screen",
                        *SCREENS.choose(rng).unwrap_or(&SCREENS[0]),
                        Vec::new(),
                    )
                } else {
                    ("page", "", Vec::new())
                }
            } else {
                track(rng)
            };
            let path = match kind {
                "page" => (*PAGES.choose(rng).unwrap_or(&PAGES[0])).to_owned(),
                // A track call is sent from the page the visitor is on.
                "track" => paths.last().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            if kind != "track" {
                paths.push(if kind == "screen" {
                    name.to_owned()
                } else {
                    path.clone()
                });
            }
            events.push(self.event(n, kind, name, &path, &props, time_ms));
            last_ms = time_ms;
            time_ms += rng.random_range(5_000..600_000);
        }
        let session = self.session(start_ms, last_ms, steps, &paths);
        (events, session)
    }

    fn person(&self) -> String {
        format!("{}-person-{}", self.history.id_prefix, self.visitor)
    }

    fn anonymous_id(&self) -> String {
        format!("{}-{:04}", self.history.visitor_prefix, self.visitor)
    }

    fn enrichment(&self) -> serde_json::Map<String, Value> {
        let (device, browser, browser_version, os, os_version) = self.client;
        let (country, region, city) = self.place;
        let value = json!({
            "utm_source": self.arrival.utm_source, "utm_medium": self.arrival.utm_medium,
            "utm_campaign": self.campaign, "source": self.arrival.source,
            "channel": self.arrival.channel, "device": device, "browser": browser,
            "browser_version": browser_version, "os": os, "os_version": os_version,
            "country": country, "region": region, "city": city, "version": 1,
        });
        value.as_object().cloned().unwrap_or_default()
    }

    fn event(
        &self,
        n: usize,
        kind: &str,
        name: &str,
        path: &str,
        props: &[(&str, &str)],
        time_ms: i64,
    ) -> Value {
        // Identified visitors send their userId from their second event on.
        let user_id = if self.visitor <= IDENTIFIED && n > 0 {
            format!("{}-{}", self.history.user_prefix, self.visitor)
        } else {
            String::new()
        };
        let mut row = self.enrichment();
        let own = json!({
            "tenant": self.history.tenant, "message_id": format!("{}-e{n}", self.id), "type": kind,
            "name": name, "anonymous_id": self.anonymous_id(), "user_id": user_id,
            "event_time": time_ms / 1000, "event_time_ms": time_ms,
            "received_at": time_ms / 1000, "received_at_ms": time_ms,
            "path": if kind == "screen" { "" } else { path },
            "url": if kind == "screen" { String::new() } else { format!("https://{}{path}", self.history.domain) },
            "referrer": self.arrival.referrer,
            "properties.key": props.iter().map(|p| p.0).collect::<Vec<_>>(),
            "properties.value": props.iter().map(|p| p.1).collect::<Vec<_>>(),
            "session_id": self.id, "person_id": self.person(), "late": 0, "is_bot": 0,
        });
        if let Value::Object(own) = own {
            row.extend(own);
        }
        Value::Object(row)
    }

    fn session(&self, start_ms: i64, end_ms: i64, events: usize, paths: &[String]) -> Value {
        let mut row = self.enrichment();
        let own = json!({
            "tenant": self.history.tenant, "session_id": self.id, "person_id": self.person(),
            "visitor_id": self.anonymous_id(), "start_time": start_ms / 1000, "start_ms": start_ms,
            "end_ms": end_ms, "duration_ms": end_ms - start_ms, "events": events,
            "page_views": paths.len(), "is_bounce": u8::from(paths.len() == 1 && events == 1),
            "entry_path": paths.first().cloned().unwrap_or_default(),
            "exit_path": paths.last().cloned().unwrap_or_default(),
            "entry_referrer": self.arrival.referrer, "deleted": 0,
        });
        if let Value::Object(own) = own {
            row.extend(own);
        }
        Value::Object(row)
    }
}

/// A track call and its properties.
fn track(
    rng: &mut StdRng,
) -> (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
) {
    let plan = *["free", "pro", "team"].choose(rng).unwrap_or(&"free");
    match rng.random_range(0..6) {
        0 => ("track", "Signed Up", vec![("plan", plan)]),
        1 => ("track", "Added To Cart", Vec::new()),
        2 => {
            let method = *["card", "paypal"].choose(rng).unwrap_or(&"card");
            ("track", "Checkout Completed", vec![("method", method)])
        }
        3 => ("track", "Invite Sent", Vec::new()),
        4 => ("track", "Trial Started", vec![("plan", plan)]),
        _ => ("track", "Plan Upgraded", vec![("plan", plan)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_deterministic_and_within_its_days() {
        let history = History {
            tenant: "shop".into(),
            domain: "shop.example".into(),
            zone: chrono_tz::Europe::Berlin,
            first_day: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap_or_default(),
            until_secs: 1_795_010_400,
            seed: 1,
            visits_per_day: 8..18,
            id_prefix: "shop".into(),
            visitor_prefix: "anon".into(),
            user_prefix: "demo-user".into(),
        };
        let (events, sessions) = history.rows();
        assert_eq!(history.rows().0, events);
        assert!(sessions.len() > 8 * 40, "{} sessions", sessions.len());
        assert!(
            events
                .iter()
                .all(|e| e["event_time"].as_i64() < Some(history.until_secs))
        );
        assert!(sessions.iter().all(|s| s["page_views"].as_u64() >= Some(1)));
    }
}
