//! The shop tenant of the Ask question table (`tests/ask/questions.json`): the data its writer
//! was given (README, "The Ask question table"), generated deterministically up to a fixed
//! "now", with every enrichment column filled, and a second tenant whose names `shop` never
//! had.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use chrono::{Datelike, TimeZone};
use chrono_tz::Europe::Berlin;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Wednesday 2026-11-18, 15:00 in Berlin.
pub const NOW_SECS: i64 = 1_795_010_400;
pub const TENANTS: &str = "[[tenants]]\nid='shop'\nwrite_keys=['wk_shop']\nread_keys=['rk_shop']\ntime_zone='Europe/Berlin'\ndomains=['shop.example']\ngoals=[{event='Signed Up'},{event='Checkout Completed'},{page='/pricing',name='Visited pricing'}]\n[[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nread_keys=['rk_globex']\n";

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

/// (source, channel, referrer, utm_source, utm_medium, campaign?)
const ARRIVALS: [(&str, &str, &str, &str, &str, bool); 13] = [
    ("", "Direct", "", "", "", false),
    ("", "Direct", "", "", "", false),
    (
        "Google",
        "Organic Search",
        "https://www.google.com/",
        "",
        "",
        false,
    ),
    (
        "Google",
        "Organic Search",
        "https://www.google.de/",
        "",
        "",
        false,
    ),
    (
        "Google",
        "Paid Search",
        "https://www.google.com/",
        "google",
        "cpc",
        true,
    ),
    (
        "Bing",
        "Organic Search",
        "https://www.bing.com/",
        "",
        "",
        false,
    ),
    (
        "DuckDuckGo",
        "Organic Search",
        "https://duckduckgo.com/",
        "",
        "",
        false,
    ),
    (
        "Facebook",
        "Organic Social",
        "https://www.facebook.com/",
        "facebook",
        "social",
        true,
    ),
    (
        "Twitter",
        "Organic Social",
        "https://t.co/abc",
        "",
        "",
        false,
    ),
    (
        "LinkedIn",
        "Organic Social",
        "https://www.linkedin.com/feed/",
        "",
        "",
        false,
    ),
    (
        "Reddit",
        "Organic Social",
        "https://www.reddit.com/r/shops/",
        "",
        "",
        false,
    ),
    (
        "Hacker News",
        "Referral",
        "https://news.ycombinator.com/item?id=1",
        "",
        "",
        false,
    ),
    ("newsletter", "Email", "", "newsletter", "email", true),
];

/// (device, browser, browser_version, os, os_version)
const CLIENTS: [(&str, &str, &str, &str, &str); 8] = [
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
const PLACES: [(&str, &str, &str); 10] = [
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

/// A visit's shared attributes.
struct Arrival {
    referrer: &'static str,
    source: &'static str,
    channel: &'static str,
    utm_source: &'static str,
    utm_medium: &'static str,
    utm_campaign: &'static str,
    client: (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ),
    place: (&'static str, &'static str, &'static str),
}

/// Rows of `events` and `sessions` (JSONEachRow objects), for both tenants.
pub fn rows() -> (Vec<Value>, Vec<Value>) {
    let mut rng = StdRng::seed_from_u64(20261118);
    let (mut events, mut sessions) = (Vec::new(), Vec::new());
    let first_day = chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
    let mut day = first_day;
    let mut visit = 0usize;
    while Berlin
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .timestamp()
        < NOW_SECS
    {
        let count = rng.random_range(8..18);
        for _ in 0..count {
            visit += 1;
            let midnight = Berlin
                .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
                .earliest()
                .unwrap()
                .timestamp();
            let start_secs = midnight + rng.random_range(0..86_000);
            if start_secs >= NOW_SECS - 3600 {
                continue;
            }
            let visitor = rng.random_range(1..=180usize);
            shop_visit(
                &mut rng,
                visit,
                visitor,
                day,
                start_secs * 1000,
                &mut events,
                &mut sessions,
            );
        }
        if day.day().is_multiple_of(3) {
            visit += 1;
            let start_ms = Berlin
                .from_local_datetime(&day.and_hms_opt(12, 0, 0).unwrap())
                .earliest()
                .unwrap()
                .timestamp_millis();
            globex_visit(visit, start_ms, &mut events, &mut sessions);
        }
        day = day.succ_opt().unwrap();
    }
    (events, sessions)
}

fn shop_visit(
    rng: &mut StdRng,
    visit: usize,
    visitor: usize,
    day: chrono::NaiveDate,
    start_ms: i64,
    events: &mut Vec<Value>,
    sessions: &mut Vec<Value>,
) {
    let (source, channel, referrer, utm_source, utm_medium, tagged) =
        *ARRIVALS.choose(rng).unwrap();
    let campaign = match (tagged, day.month()) {
        (false, _) => "",
        (true, 5 | 6) => "spring_sale",
        (true, 10) => "launch_week",
        (true, 11) => "black_friday",
        (true, _) => "",
    };
    let app = rng.random_bool(0.1);
    let arrival = Arrival {
        referrer,
        source,
        channel,
        utm_source,
        utm_medium,
        utm_campaign: campaign,
        client: if app {
            CLIENTS[5]
        } else {
            *CLIENTS.choose(rng).unwrap()
        },
        place: PLACES[(visitor * 7 + 3) % PLACES.len()],
    };
    let anonymous_id = format!("anon-{visitor:04}");
    let user_id = if visitor <= 60 {
        format!("demo-user-{visitor}")
    } else {
        String::new()
    };
    let person_id = format!("person-{visitor}");
    let session_id = format!("shop-s{visit}");
    let steps = rng.random_range(1..=6usize);
    let mut time_ms = start_ms;
    let mut paths: Vec<String> = Vec::new();
    let mut kinds = 0;
    for n in 0..steps {
        let (kind, name, path, props): (&str, &str, String, Vec<(&str, &str)>) =
            if n == 0 || rng.random_bool(0.55) {
                if app {
                    (
                        "screen",
                        SCREENS.choose(rng).unwrap(),
                        String::new(),
                        vec![],
                    )
                } else {
                    ("page", "", PAGES.choose(rng).unwrap().to_string(), vec![])
                }
            } else {
                let plan = *["free", "pro", "team"].choose(rng).unwrap();
                match rng.random_range(0..6) {
                    0 => ("track", "Signed Up", String::new(), vec![("plan", plan)]),
                    1 => ("track", "Added To Cart", String::new(), vec![]),
                    2 => (
                        "track",
                        "Checkout Completed",
                        String::new(),
                        vec![("method", *["card", "paypal"].choose(rng).unwrap())],
                    ),
                    3 => ("track", "Invite Sent", String::new(), vec![]),
                    4 => (
                        "track",
                        "Trial Started",
                        String::new(),
                        vec![("plan", plan)],
                    ),
                    _ => (
                        "track",
                        "Plan Upgraded",
                        String::new(),
                        vec![("plan", plan)],
                    ),
                }
            };
        let location = if kind == "screen" {
            name.to_owned()
        } else {
            path.clone()
        };
        if kind != "track" {
            paths.push(location.clone());
        }
        kinds += 1;
        // A track call is sent from the page the visitor is on.
        let sent_from = if kind == "track" {
            paths.last().cloned().unwrap_or_default()
        } else {
            path.clone()
        };
        events.push(event_row(
            "shop",
            &format!("{session_id}-e{n}"),
            kind,
            name,
            &anonymous_id,
            if n > 0 { &user_id } else { "" },
            time_ms,
            &sent_from,
            &props,
            &session_id,
            &person_id,
            &arrival,
        ));
        time_ms += rng.random_range(5_000..600_000);
    }
    let last_ms = time_ms - 1; // the last event's time is before the increment
    let end_ms = events
        .last()
        .and_then(|e| e["event_time_ms"].as_i64())
        .unwrap_or(last_ms);
    sessions.push(session_row(
        "shop",
        &session_id,
        &person_id,
        &anonymous_id,
        start_ms,
        end_ms,
        kinds,
        &paths,
        &arrival,
    ));
}

fn globex_visit(visit: usize, start_ms: i64, events: &mut Vec<Value>, sessions: &mut Vec<Value>) {
    let arrival = Arrival {
        referrer: "",
        source: "",
        channel: "Direct",
        utm_source: "",
        utm_medium: "",
        utm_campaign: "cyber_monday",
        client: CLIENTS[0],
        place: ("AU", "New South Wales", "Sydney"),
    };
    let session_id = format!("globex-s{visit}");
    let rows = [
        ("page", "", "/store"),
        ("track", "Order Placed", "/store"),
        ("page", "", "/careers"),
        ("track", "Job Applied", "/careers"),
    ];
    for (n, (kind, name, path)) in rows.iter().enumerate() {
        events.push(event_row(
            "globex",
            &format!("{session_id}-e{n}"),
            kind,
            name,
            "g-visitor",
            "",
            start_ms + n as i64 * 1000,
            path,
            &[],
            &session_id,
            "g-person",
            &arrival,
        ));
    }
    let paths = vec!["/store".to_owned(), "/careers".to_owned()];
    sessions.push(session_row(
        "globex",
        &session_id,
        "g-person",
        "g-visitor",
        start_ms,
        start_ms + 3000,
        4,
        &paths,
        &arrival,
    ));
}

#[allow(clippy::too_many_arguments)]
fn event_row(
    tenant: &str,
    id: &str,
    kind: &str,
    name: &str,
    anonymous_id: &str,
    user_id: &str,
    time_ms: i64,
    path: &str,
    props: &[(&str, &str)],
    session_id: &str,
    person_id: &str,
    arrival: &Arrival,
) -> Value {
    let (device, browser, browser_version, os, os_version) = arrival.client;
    let (country, region, city) = arrival.place;
    json!({
        "tenant": tenant, "message_id": id, "type": kind, "name": name,
        "anonymous_id": anonymous_id, "user_id": user_id,
        "event_time": time_ms / 1000, "event_time_ms": time_ms,
        "received_at": time_ms / 1000, "received_at_ms": time_ms,
        "path": if kind == "screen" { "" } else { path },
        "url": if kind == "screen" { String::new() } else { format!("https://shop.example{path}") },
        "referrer": arrival.referrer,
        "utm_source": arrival.utm_source, "utm_medium": arrival.utm_medium, "utm_campaign": arrival.utm_campaign,
        "properties.key": props.iter().map(|p| p.0).collect::<Vec<_>>(),
        "properties.value": props.iter().map(|p| p.1).collect::<Vec<_>>(),
        "session_id": session_id, "person_id": person_id, "late": 0, "is_bot": 0,
        "source": arrival.source, "channel": arrival.channel,
        "device": device, "browser": browser, "browser_version": browser_version,
        "os": os, "os_version": os_version, "country": country, "region": region, "city": city,
        "version": 1,
    })
}

#[allow(clippy::too_many_arguments)]
fn session_row(
    tenant: &str,
    session_id: &str,
    person_id: &str,
    visitor_id: &str,
    start_ms: i64,
    end_ms: i64,
    events: usize,
    paths: &[String],
    arrival: &Arrival,
) -> Value {
    let (device, browser, browser_version, os, os_version) = arrival.client;
    let (country, region, city) = arrival.place;
    json!({
        "tenant": tenant, "session_id": session_id, "person_id": person_id, "visitor_id": visitor_id,
        "start_time": start_ms / 1000, "start_ms": start_ms, "end_ms": end_ms, "duration_ms": end_ms - start_ms,
        "events": events, "page_views": paths.len(), "is_bounce": u8::from(paths.len() == 1 && events == 1),
        "entry_path": paths.first().cloned().unwrap_or_default(),
        "exit_path": paths.last().cloned().unwrap_or_default(),
        "entry_referrer": arrival.referrer,
        "utm_source": arrival.utm_source, "utm_medium": arrival.utm_medium, "utm_campaign": arrival.utm_campaign,
        "source": arrival.source, "channel": arrival.channel,
        "device": device, "browser": browser, "browser_version": browser_version,
        "os": os, "os_version": os_version, "country": country, "region": region, "city": city,
        "deleted": 0, "version": 1,
    })
}

/// Loads the rows into `database`, and a "complete up to" mark at now.
pub async fn load(http: &reqwest::Client, url: &str, database: &str) {
    let (events, sessions) = rows();
    for (table, rows) in [("events", events), ("sessions", sessions)] {
        for chunk in rows.chunks(5_000) {
            let body: Vec<String> = chunk.iter().map(Value::to_string).collect();
            super::sql(
                http,
                url,
                &format!(
                    "INSERT INTO {database}.{table} FORMAT JSONEachRow\n{}",
                    body.join("\n")
                ),
            )
            .await;
        }
    }
    super::sql(
        http,
        url,
        &format!(
            "INSERT INTO {database}._progress (tenant, complete_until_ms, epoch, updated_at) VALUES ('shop', {}, 1, now())",
            NOW_SECS * 1000
        ),
    )
    .await;
}
