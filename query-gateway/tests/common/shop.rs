//! The shop tenant of the Ask question table (`tests/ask/questions.json`): the data its writer
//! was given (README, "The Ask question table"), generated deterministically up to a fixed
//! "now", with every enrichment column filled, and a second tenant whose names `shop` never
//! had.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use chrono::{Datelike, TimeZone};
use chrono_tz::Europe::Berlin;
use serde_json::{Value, json};

/// Wednesday 2026-11-18, 15:00 in Berlin.
pub const NOW_SECS: i64 = 1_795_010_400;
pub const TENANTS: &str = "[[tenants]]\nid='shop'\nwrite_keys=['wk_shop']\nread_keys=['rk_shop']\ntime_zone='Europe/Berlin'\ndomains=['shop.example']\ngoals=[{event='Signed Up'},{event='Checkout Completed'},{page='/pricing',name='Visited pricing'}]\n[[tenants]]\nid='globex'\nwrite_keys=['wk_globex']\nread_keys=['rk_globex']\n";

/// The shop's rows (from 2026-05-01 to [`NOW_SECS`], `loadgen::history`) and a few visits
/// of globex, whose pages and events the shop never had.
pub fn rows() -> (Vec<Value>, Vec<Value>) {
    let history = loadgen::history::History {
        tenant: "shop".into(),
        domain: "shop.example".into(),
        zone: chrono_tz::Europe::Berlin,
        first_day: chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap(),
        until_secs: NOW_SECS,
        seed: 20261118,
        visits_per_day: 8..18,
        id_prefix: "shop".into(),
        visitor_prefix: "anon".into(),
        user_prefix: "demo-user".into(),
    };
    let (mut events, mut sessions) = history.rows();
    let mut day = chrono::NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
    let mut visit = 0;
    while day < chrono::NaiveDate::from_ymd_opt(2026, 11, 18).unwrap() {
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

/// A globex visit: `/store`, `Order Placed`, `/careers`, `Job Applied`, from Sydney.
fn globex_visit(visit: usize, start_ms: i64, events: &mut Vec<Value>, sessions: &mut Vec<Value>) {
    let session_id = format!("globex-s{visit}");
    let place = json!({"country": "AU", "region": "New South Wales", "city": "Sydney", "channel": "Direct", "utm_campaign": "cyber_monday", "device": "Desktop", "browser": "Chrome", "os": "Windows"});
    let steps = [
        ("page", "", "/store"),
        ("track", "Order Placed", "/store"),
        ("page", "", "/careers"),
        ("track", "Job Applied", "/careers"),
    ];
    for (n, (kind, name, path)) in steps.iter().enumerate() {
        let time_ms = start_ms + n as i64 * 1000;
        let mut row = json!({
            "tenant": "globex", "message_id": format!("{session_id}-e{n}"), "type": kind, "name": name,
            "anonymous_id": "g-visitor", "user_id": "", "event_time": time_ms / 1000, "event_time_ms": time_ms,
            "received_at": time_ms / 1000, "received_at_ms": time_ms, "path": path,
            "url": format!("https://globex.example{path}"), "session_id": session_id,
            "person_id": "g-person", "late": 0, "is_bot": 0, "version": 1,
        });
        merge(&mut row, &place);
        events.push(row);
    }
    let mut session = json!({
        "tenant": "globex", "session_id": session_id, "person_id": "g-person", "visitor_id": "g-visitor",
        "start_time": start_ms / 1000, "start_ms": start_ms, "end_ms": start_ms + 3000, "duration_ms": 3000,
        "events": 4, "page_views": 2, "is_bounce": 0, "entry_path": "/store", "exit_path": "/careers",
        "deleted": 0, "version": 1,
    });
    merge(&mut session, &place);
    sessions.push(session);
}

fn merge(row: &mut Value, extra: &Value) {
    if let (Some(row), Some(extra)) = (row.as_object_mut(), extra.as_object()) {
        row.extend(extra.clone());
    }
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
