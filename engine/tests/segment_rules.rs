//! Segment's identity model and the shared event definitions, end to end: each numbered rule
//! of issue 13 through the real broker, a two-process engine cluster, ClickHouse and the query
//! API, one tenant per rule so that each answer is checked on its own.
//!
//! 1. An event with a `userId` belongs to that user (`shared`); an event carrying both ids
//!    links them like an identify.
//! 2. `alias` from an earlier user id merges the two users (`rename`).
//! 3. Placeholder ids link nothing, and each refusal is a warning row (`placeholder`).
//! 4. An identify past the lateness horizon still links (`offline`).
//! 5. A screen is a page view; identify is not activity (`mobile`).
//! 6. One page view and a track is not a bounce (`engaged`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{ClickHouse, Cluster, TestEnv, engine_config, produce, wait_until_checkpointed};
use query_gateway::{AppState, router};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use schemas::{Event, EventKind};
use serde_json::{Value, json};
use tower::ServiceExt;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
/// The engine's default lateness horizon.
const LATENESS: i64 = 72 * 60 * MINUTE;
const TENANTS: [&str; 6] = [
    "shared",
    "rename",
    "placeholder",
    "offline",
    "mobile",
    "engaged",
];

fn event(tenant: &str, id: &str, kind: EventKind, anonymous: &str, user: &str, time: i64) -> Event {
    let mut event = Event::new(tenant, id, kind, time);
    event.anonymous_id = anonymous.into();
    event.user_id = user.into();
    event.received_at_ms = time + 1_000;
    event.page.path = format!("/{id}");
    event.name = format!("{id} name");
    event
}

/// The events of every rule, each tenant's ids prefixed by its initial.
fn events() -> Vec<Event> {
    use EventKind::{Alias, Identify, Page, Screen, Track};
    let mut offline_login = event("offline", "o3", Identify, "a1", "alice", T0 + 6 * MINUTE);
    offline_login.received_at_ms = T0 + 26 * MINUTE + LATENESS;
    let mut alias = event("rename", "r5", Alias, "", "new-user", T0 + 4 * MINUTE);
    alias.previous_id = "old-user".into();
    vec![
        // 1. alice logs in on a shared browser, then bob does; bob's click is his.
        event("shared", "s1", Page, "anon-1", "", T0),
        event("shared", "s2", Identify, "anon-1", "alice", T0 + MINUTE),
        event("shared", "s3", Identify, "anon-1", "bob", T0 + 2 * MINUTE),
        event("shared", "s4", Track, "anon-1", "bob", T0 + 3 * MINUTE),
        event("shared", "s5", Page, "anon-1", "", T0 + 4 * MINUTE),
        // ... and a visitor whose first event with both ids links them.
        event("shared", "s6", Page, "anon-2", "", T0),
        event("shared", "s7", Track, "anon-2", "carol", T0 + MINUTE),
        // 2. old-user (a browser and a server-side event) becomes new-user.
        event("rename", "r1", Page, "browser", "", T0),
        event("rename", "r2", Identify, "browser", "old-user", T0 + MINUTE),
        event("rename", "r3", Track, "", "old-user", T0 + 2 * MINUTE),
        event("rename", "r4", Track, "", "new-user", T0 + 3 * MINUTE),
        alias,
        // 3. Two strangers whose integration sends userId "undefined".
        event("placeholder", "p1", Page, "v1", "", T0),
        event(
            "placeholder",
            "p2",
            Identify,
            "v1",
            "undefined",
            T0 + MINUTE,
        ),
        event("placeholder", "p3", Page, "v2", "", T0),
        event(
            "placeholder",
            "p4",
            Identify,
            "v2",
            "undefined",
            T0 + MINUTE,
        ),
        // 4. A login queued offline, delivered 20 minutes past the lateness horizon.
        event("offline", "o1", Page, "a1", "", T0),
        event("offline", "o2", Page, "a1", "", T0 + 5 * MINUTE),
        offline_login,
        // 5. Two app visits 50 minutes apart, an identify between them, and a CRM sync.
        event("mobile", "m1", Screen, "phone", "", T0),
        event("mobile", "m2", Identify, "phone", "dana", T0 + 25 * MINUTE),
        event("mobile", "m3", Screen, "phone", "", T0 + 50 * MINUTE),
        event("mobile", "m4", Identify, "", "erin", T0 + 2 * MINUTE),
        // 6. One page view and a sign-up; one page view alone.
        event("engaged", "e1", Page, "a1", "", T0),
        event("engaged", "e2", Track, "a1", "", T0 + MINUTE),
        event("engaged", "e3", Page, "a2", "", T0),
    ]
}

struct Check {
    clickhouse: ClickHouse,
    database: String,
    api: Arc<AppState>,
}

impl Check {
    async fn rows(&self, sql: &str) -> Vec<String> {
        self.clickhouse
            .query(&format!(
                "{} FORMAT TabSeparated",
                sql.replace("{db}", &self.database)
            ))
            .await
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `message_id:person_id` of a tenant's events, sorted.
    async fn persons(&self, tenant: &str) -> Vec<String> {
        self.rows(&format!(
            "SELECT concat(message_id, ':', person_id) FROM {{db}}.events FINAL WHERE tenant = '{tenant}' ORDER BY message_id"
        ))
        .await
    }

    async fn get(&self, tenant: &str, path: &str) -> Value {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer rk_{tenant}"))
            .body(Body::empty())
            .unwrap();
        let response = router(self.api.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The overview's numbers for the hours around `T0`.
    async fn overview(&self, tenant: &str) -> Value {
        let (from, to) = (T0 / 1000 - 3_600, T0 / 1000 + 3 * 3_600);
        let body = self
            .get(tenant, &format!("/api/overview?from={from}&to={to}"))
            .await;
        let c = &body["current"];
        json!([
            c["visitors"],
            c["persons"],
            c["sessions"],
            c["page_views"],
            c["events"],
            c["bounce_rate"]
        ])
    }

    async fn person_sessions(&self, tenant: &str, person: &str) -> Value {
        let (from, to) = (T0 / 1000 - 3_600, T0 / 1000 + 3 * 3_600);
        let body = self
            .get(
                tenant,
                &format!("/api/persons/{person}/sessions?from={from}&to={to}"),
            )
            .await;
        let sessions: Vec<Value> = body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("sessions in {body}"))
            .iter()
            .map(|s| {
                json!([
                    s["session_id"],
                    s["events"],
                    s["page_views"],
                    s["is_bounce"]
                ])
            })
            .collect();
        json!(sessions)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_identity_rules_and_definitions_through_clickhouse_and_the_api() {
    let TestEnv {
        brokers,
        clickhouse,
        topic,
        database,
        dir,
    } = TestEnv::new("segment_rules").await;
    let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let events = events();
    produce(&producer, &topic, &events).await;
    let mut cluster = Cluster::start(&dir, &config, 2);
    wait_until_checkpointed(&clickhouse, &database, events.len(), &mut cluster).await;
    drop(cluster);

    let tenants: String = TENANTS
        .iter()
        .map(|t| format!("[[tenants]]\nid='{t}'\nwrite_keys=['wk_{t}']\nread_keys=['rk_{t}']\n"))
        .collect();
    let check = Check {
        api: Arc::new(AppState::offline(
            schemas::tenants::Tenants::parse(&tenants).expect("tenants"),
            &clickhouse.url,
            &database,
        )),
        clickhouse,
        database,
    };

    // 1. bob's click is bob's; anon-1 stays alice's; carol's first event linked anon-2.
    assert_eq!(
        check.persons("shared").await,
        [
            "s1:alice", "s2:alice", "s3:bob", "s4:bob", "s5:alice", "s6:carol", "s7:carol"
        ]
    );
    assert_eq!(
        check
            .rows("SELECT concat(id, ':', person_id) FROM {db}.identities FINAL WHERE tenant = 'shared' AND deleted = 0 ORDER BY id")
            .await,
        ["alice:alice", "anon-1:alice", "anon-2:carol", "carol:carol"]
    );
    assert_eq!(check.overview("shared").await, json!([2, 3, 3, 3, 5, 0.0]));

    // 2. Everything of old-user is new-user's, retroactively, in one session.
    assert_eq!(
        check.persons("rename").await,
        [
            "r1:new-user",
            "r2:new-user",
            "r3:new-user",
            "r4:new-user",
            "r5:new-user"
        ]
    );
    assert_eq!(
        check.person_sessions("rename", "new-user").await,
        json!([["r1", 3, 1, 0]])
    );
    assert_eq!(check.person_sessions("rename", "old-user").await, json!([]));
    assert_eq!(check.overview("rename").await, json!([3, 1, 1, 1, 3, 0.0]));

    // 3. The strangers stay apart; the refusals are visible.
    assert_eq!(
        check.persons("placeholder").await,
        ["p1:v1", "p2:v1", "p3:v2", "p4:v2"]
    );
    assert_eq!(
        check
            .rows("SELECT concat(message_id, ' ', type, ' ', field, ' ', value) FROM {db}.ingestion_warnings FINAL WHERE tenant = 'placeholder' ORDER BY message_id")
            .await,
        ["p2 placeholder_id userId undefined", "p4 placeholder_id userId undefined"]
    );
    assert_eq!(
        check
            .rows("SELECT count() FROM {db}.identities FINAL WHERE tenant = 'placeholder'")
            .await,
        ["0"]
    );
    assert_eq!(
        check.overview("placeholder").await,
        json!([2, 2, 2, 2, 2, 1.0])
    );

    // 4. The late login is stored as late and still links: the visit is alice's.
    assert_eq!(
        check
            .rows("SELECT concat(message_id, ':', person_id, ':', toString(late)) FROM {db}.events FINAL WHERE tenant = 'offline' ORDER BY message_id")
            .await,
        ["o1:alice:0", "o2:alice:0", "o3::1"]
    );
    assert_eq!(
        check.person_sessions("offline", "alice").await,
        json!([["o1", 2, 2, 0]])
    );

    // 5. Two visits of two screens' worth of page views; the identifies made no visit.
    assert_eq!(check.overview("mobile").await, json!([1, 1, 2, 2, 2, 1.0]));
    assert_eq!(
        check
            .rows("SELECT concat(metric, ':', dimension, ':', toString(sum(value))) FROM {db}.agg_minute_metrics FINAL WHERE tenant = 'mobile' AND metric IN ('page_views', 'unique_visitors') GROUP BY metric, dimension ORDER BY metric, dimension")
            .await,
        ["page_views:m1 name:1", "page_views:m3 name:1", "unique_visitors::2"]
    );
    assert_eq!(
        check
            .rows("SELECT count() FROM {db}.agg_hour_visitors FINAL WHERE tenant = 'mobile' AND visitor_id = 'erin'")
            .await,
        ["0"]
    );

    // 6. The sign-up made the first visit engaged; the lone page view bounced.
    assert_eq!(
        check
            .rows("SELECT concat(session_id, ':', toString(is_bounce)) FROM {db}.sessions FINAL WHERE tenant = 'engaged' AND deleted = 0 ORDER BY session_id")
            .await,
        ["e1:0", "e3:1"]
    );
    assert_eq!(check.overview("engaged").await, json!([2, 2, 2, 2, 3, 0.5]));

    check
        .clickhouse
        .query(&format!("DROP DATABASE {}", check.database))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}
