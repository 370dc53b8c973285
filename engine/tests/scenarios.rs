//! The named identity and session scenarios, end to end through the real broker, a
//! two-process engine cluster and ClickHouse: anonymous browsing then login, two devices merged
//! by alias and then unmerged by a control message, identify between two known users refused
//! (also after a restart, from the stored claims), a late event bridging two sessions, and an
//! event past the lateness horizon.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic with a message by design

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{ClickHouse, Cluster, TestEnv, engine_config, wait_until_checkpointed};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{Event, EventKind};

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;
/// The engine's default lateness horizon.
const LATENESS: i64 = 72 * 60 * MINUTE;

fn event(tenant: &str, id: &str, kind: EventKind, anonymous: &str, user: &str, time: i64) -> Event {
    let mut event = Event::new(tenant, id, kind, time);
    event.anonymous_id = anonymous.into();
    event.user_id = user.into();
    event.received_at_ms = time + 1_000;
    event.page.path = format!("/{id}");
    event
}

fn page(tenant: &str, id: &str, anonymous: &str, time: i64) -> Event {
    event(tenant, id, EventKind::Page, anonymous, "", time)
}

fn identify(tenant: &str, id: &str, anonymous: &str, user: &str, time: i64) -> Event {
    event(tenant, id, EventKind::Identify, anonymous, user, time)
}

fn alias(tenant: &str, id: &str, previous: &str, user: &str, time: i64) -> Event {
    let mut e = event(tenant, id, EventKind::Alias, "", user, time);
    e.previous_id = previous.into();
    e
}

struct Harness {
    topic: String,
    producer: FutureProducer,
    clickhouse: ClickHouse,
    database: String,
    produced: usize,
}

impl Harness {
    async fn send(&mut self, events: Vec<Event>) {
        for event in events {
            let (key, payload) = (event.partition_key(), schemas::wire::encode(&event));
            let delivery = self
                .producer
                .send_result(FutureRecord::to(&self.topic).key(&key).payload(&payload))
                .expect("enqueue");
            delivery.await.expect("report").expect("acknowledged");
            self.produced += 1;
        }
    }

    async fn control(&self, json: &str) {
        let topic = format!("{}_control", self.topic);
        let delivery = self
            .producer
            .send_result(FutureRecord::<(), _>::to(&topic).payload(json))
            .expect("enqueue");
        delivery.await.expect("report").expect("acknowledged");
    }

    async fn scalar(&self, sql: &str) -> String {
        self.clickhouse
            .query(&sql.replace("{db}", &self.database))
            .await
            .trim()
            .to_owned()
    }

    async fn set(&self, sql: &str) -> BTreeSet<String> {
        self.clickhouse
            .query(&sql.replace("{db}", &self.database))
            .await
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the checkpoints cover everything produced.
    async fn caught_up(&self, cluster: &mut Cluster) {
        wait_until_checkpointed(&self.clickhouse, &self.database, self.produced, cluster).await;
    }

    /// Waits until `sql` returns `expected` (corrections arrive within an epoch or two).
    async fn eventually(&self, cluster: &mut Cluster, sql: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            cluster.assert_running();
            let actual = self.scalar(sql).await;
            if actual == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql} returned {actual:?}, expected {expected:?}; logs:\n{}",
                cluster.logs()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_and_session_scenarios_through_clickhouse() {
    let TestEnv {
        brokers,
        clickhouse,
        topic,
        database,
        dir,
    } = TestEnv::new("scenarios").await;
    let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut h = Harness {
        topic,
        producer,
        clickhouse,
        database,
        produced: 0,
    };

    // Anonymous browsing on two days, then a login: both sessions become alice's.
    h.send(vec![
        page("login", "l1", "a1", T0),
        page("login", "l2", "a1", T0 + 5 * MINUTE),
        page("login", "l3", "a1", T0 + 24 * 60 * MINUTE),
        identify(
            "login",
            "l4",
            "a1",
            "alice",
            T0 + 24 * 60 * MINUTE + 10 * MINUTE,
        ),
    ])
    .await;
    // Two devices of carol, merged by alias, on the newest day of the log: the later unmerge
    // corrects what state still holds, and every worker's clock is at most a day past T0.
    let day2 = T0 + 24 * 60 * MINUTE;
    h.send(vec![
        page("devices", "d1", "phone", day2),
        identify("devices", "d2", "phone", "carol", day2 + MINUTE),
        page("devices", "d3", "laptop", day2 + 2 * MINUTE),
        page("devices", "d4", "laptop", day2 + 3 * MINUTE),
        alias("devices", "d5", "laptop", "carol", day2 + 4 * MINUTE),
    ])
    .await;
    // A shared computer: the second identify, to another known user, is refused.
    let mut bob = page("refused", "r4", "", T0);
    bob.user_id = "bob".into();
    h.send(vec![
        page("refused", "r1", "shared", T0),
        identify("refused", "r2", "shared", "dave", T0 + MINUTE),
        identify("refused", "r3", "shared", "bob", T0 + 2 * MINUTE),
        bob,
    ])
    .await;
    // Two sessions 45 minutes apart, and an event past the lateness horizon.
    let mut too_late = page("late", "t4", "v", T0 + 30 * MINUTE);
    too_late.received_at_ms = T0 + 31 * MINUTE + LATENESS;
    h.send(vec![
        page("late", "t1", "v", T0),
        page("late", "t2", "v", T0 + 45 * MINUTE),
        too_late,
    ])
    .await;

    let mut cluster = Cluster::start(&dir, &config, 2);
    h.caught_up(&mut cluster).await;

    let sessions = |tenant: &str| {
        format!(
            "SELECT session_id, person_id FROM {{db}}.sessions FINAL WHERE deleted = 0 AND tenant = '{tenant}' ORDER BY session_id FORMAT TSV"
        )
    };
    assert_eq!(
        h.set(&sessions("login")).await,
        BTreeSet::from(["l1\talice".into(), "l3\talice".into()]),
        "login re-attributes both sessions"
    );
    assert_eq!(
        h.scalar("SELECT groupUniqArray(person_id) FROM {db}.events FINAL WHERE tenant = 'login'")
            .await,
        "['alice']"
    );
    assert_eq!(
        h.scalar("SELECT value FROM {db}.agg_minute_metrics FINAL WHERE tenant = 'login' AND metric = 'unique_persons' AND minute = toDateTime(1699999980)").await,
        "1"
    );
    assert_eq!(
        h.set(&sessions("devices")).await,
        BTreeSet::from(["d1\tcarol".into()]),
        "the laptop joined carol's session"
    );
    assert_eq!(
        h.set(&sessions("refused")).await,
        BTreeSet::from(["r1\tdave".into(), "r4\tbob".into()]),
        "bob stays bob"
    );
    assert_eq!(h.scalar("SELECT person_id FROM {db}.identities FINAL WHERE tenant = 'refused' AND id = 'bob' AND deleted = 0").await, "");
    assert_eq!(
        h.set(&sessions("late")).await,
        BTreeSet::from(["t1\tv".into(), "t2\tv".into()])
    );
    assert_eq!(h.scalar("SELECT concat(toString(late), session_id) FROM {db}.events FINAL WHERE message_id = 't4'").await, "1");

    // The late bridge arrives: t1 and t2 merge into t1, and t2 becomes a tombstone.
    let mut bridge = page("late", "t3", "v", T0 + 25 * MINUTE);
    bridge.received_at_ms = T0 + 46 * MINUTE;
    h.send(vec![bridge]).await;
    h.caught_up(&mut cluster).await;
    assert_eq!(
        h.scalar("SELECT concat(session_id, ' ', toString(events)) FROM {db}.sessions FINAL WHERE deleted = 0 AND tenant = 'late'").await,
        "t1 3",
        "the bridge merged t1 and t2"
    );
    assert_eq!(
        h.scalar("SELECT deleted FROM {db}.sessions FINAL WHERE session_id = 't2'")
            .await,
        "1",
        "the merged-away session is a tombstone"
    );
    assert_eq!(
        h.scalar("SELECT session_id FROM {db}.events FINAL WHERE message_id = 't2'")
            .await,
        "t1"
    );

    // Unmerge the laptop by control message: it is its own person again, with its own session.
    h.control(r#"{"type":"unmerge","tenant":"devices","anonymous_id":"laptop","user_id":"carol"}"#)
        .await;
    h.eventually(
        &mut cluster,
        "SELECT arrayStringConcat(arraySort(groupArray(concat(session_id, ':', person_id))), ',') \
         FROM {db}.sessions FINAL WHERE deleted = 0 AND tenant = 'devices'",
        "d1:carol,d3:laptop",
    )
    .await;
    // Each table is written by its own sink: the events may land an epoch after the sessions.
    h.eventually(
        &mut cluster,
        "SELECT arrayStringConcat(groupArray(person_id), ',') FROM {db}.events FINAL WHERE message_id IN ('d3', 'd4')",
        "laptop,laptop",
    )
    .await;

    // Restart: the identity map comes back from the stored claims, so a new identify of the
    // shared computer to erin is still refused, and its new events are still dave's.
    drop(cluster);
    let mut cluster = Cluster::start(&dir, &config, 2);
    h.send(vec![
        identify("refused", "r5", "shared", "erin", T0 + 3 * MINUTE),
        page("refused", "r6", "shared", T0 + 4 * MINUTE),
    ])
    .await;
    h.caught_up(&mut cluster).await;
    h.eventually(
        &mut cluster,
        "SELECT person_id FROM {db}.events FINAL WHERE message_id = 'r6'",
        "dave",
    )
    .await;
    assert_eq!(h.scalar("SELECT count() FROM {db}.identities FINAL WHERE tenant = 'refused' AND id = 'erin' AND deleted = 0").await, "0");

    drop(cluster);
    h.clickhouse
        .query(&format!("DROP DATABASE {}", h.database))
        .await;
    let _ = std::fs::remove_dir_all(&dir);
}
