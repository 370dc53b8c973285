//! Helpers shared by the engine's integration tests: real servers, real processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../deploy/chdb/harness.rs"]
pub mod chdb;
pub mod crash;
pub mod reference;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::Value;

/// The tests' salt of erased ids' hashes (engine configuration and control records).
pub const ERASURE_SALT: &str = "erasure test salt";

/// Partitions of every test topic.
pub const PARTITIONS: i32 = 4;

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with deploy/test.sh, which installs and starts the servers")
    })
}

/// A port nothing listens on, for an engine process to bind later. It is drawn below the
/// kernel's ephemeral range (32768 and up): a port from `bind(0)` can be taken, before the
/// engine binds it, by any outgoing connection (the engine's own Kafka and ClickHouse
/// clients), which made timely fail with "Address already in use". Ports handed out are not
/// handed out again by this process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("ports");
    loop {
        let port = rand::random_range(21_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// Engine processes, killed on drop so a failing test leaves nothing running.
pub struct Cluster {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
    /// Each process's `/metrics` address.
    pub metrics: Vec<std::net::SocketAddr>,
}

/// Distinguishes the logs of successive clusters of one test.
static GENERATION: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Cluster {
    /// `processes` processes of one worker each.
    pub fn start(dir: &Path, config: &Path, processes: usize) -> Cluster {
        Cluster::start_shape(dir, config, processes, 1)
    }

    /// `engine -w workers -n processes -p i -h hostfile` for every i.
    pub fn start_shape(dir: &Path, config: &Path, processes: usize, workers: usize) -> Cluster {
        Cluster::start_with(dir, config, processes, workers, &[])
    }

    /// As [`Cluster::start_shape`], with `extra` engine flags.
    pub fn start_with(
        dir: &Path,
        config: &Path,
        processes: usize,
        workers: usize,
        extra: &[&str],
    ) -> Cluster {
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hostfile = dir.join(format!("hosts-{generation}"));
        let hosts: Vec<String> = (0..processes)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        std::fs::write(&hostfile, hosts.join("\n")).expect("hostfile");
        let mut cluster = Cluster {
            children: Vec::new(),
            logs: Vec::new(),
            metrics: Vec::new(),
        };
        for process in 0..processes {
            let log = dir.join(format!("engine-{generation}-{process}.log"));
            let output = std::fs::File::create(&log).expect("log file");
            let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port())
                .parse()
                .expect("address");
            let child = Command::new(env!("CARGO_BIN_EXE_engine"))
                .args([
                    "-w",
                    &workers.to_string(),
                    "-n",
                    &processes.to_string(),
                    "-p",
                    &process.to_string(),
                ])
                .arg("-h")
                .arg(&hostfile)
                .arg("--config")
                .arg(config)
                .arg("--metrics-listen")
                .arg(metrics.to_string())
                .args(extra)
                .env("RUST_LOG", "info")
                .env("RUST_BACKTRACE", "0")
                .stdout(Stdio::from(output.try_clone().expect("clone")))
                .stderr(Stdio::from(output))
                .spawn()
                .expect("spawn engine");
            cluster.children.push(child);
            cluster.logs.push(log);
            cluster.metrics.push(metrics);
        }
        cluster
    }

    /// Processes in the cluster.
    pub fn processes(&self) -> usize {
        self.children.len()
    }

    /// SIGKILL to one process.
    pub fn kill(&mut self, process: usize) {
        self.children[process].kill().expect("SIGKILL");
    }

    /// SIGTERM to one process: it finishes and writes its open epochs, then exits.
    pub fn terminate(&mut self, process: usize) {
        let pid = self.children[process].id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits until every process has exited; panics (with the logs) when one is still running
    /// after `timeout`: the death of one process must take the cluster down, not hang it.
    pub fn wait_down(&mut self, timeout: std::time::Duration) -> std::time::Duration {
        let started = std::time::Instant::now();
        loop {
            let mut running = 0;
            for child in &mut self.children {
                if child.try_wait().expect("wait").is_none() {
                    running += 1;
                }
            }
            if running == 0 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "{running} engine processes still running {timeout:?} after a peer died; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Each process's exit status, `None` while it runs.
    pub fn statuses(&mut self) -> Vec<Option<std::process::ExitStatus>> {
        self.children
            .iter_mut()
            .map(|child| child.try_wait().expect("wait"))
            .collect()
    }

    pub fn assert_running(&mut self) {
        for (child, log) in self.children.iter_mut().zip(&self.logs) {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "engine exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }

    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|log| std::fs::read_to_string(log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct ClickHouse {
    pub url: String,
    pub http: reqwest::Client,
}

impl ClickHouse {
    pub async fn query(&self, sql: &str) -> String {
        let response = self
            .http
            .post(&self.url)
            .body(sql.to_owned())
            .send()
            .await
            .unwrap_or_else(|error| panic!("ClickHouse at {} is unreachable: {error}", self.url));
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(status.is_success(), "ClickHouse refused {sql}: {text}");
        text
    }

    pub async fn rows(&self, sql: &str) -> Vec<Value> {
        self.query(&format!("{sql} FORMAT JSONEachRow"))
            .await
            .lines()
            .map(|line| serde_json::from_str(line).expect("JSON row"))
            .collect()
    }
}

pub async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let results = admin
        .create_topics(
            [&NewTopic::new(
                topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap_or_else(|error| panic!("broker at {brokers} is unreachable: {error}"));
    for result in results {
        result.unwrap_or_else(|(name, code)| panic!("cannot create topic {name}: {code:?}"));
    }
}

/// Writes an engine configuration for a test's own topic (and control topic) and database.
pub fn engine_config(
    dir: &Path,
    brokers: &str,
    topic: &str,
    clickhouse_url: &str,
    database: &str,
) -> PathBuf {
    let file = dir.join("engine.toml");
    std::fs::write(
        &file,
        format!(
            "epoch_ms = 200\nconnect_timeout_secs = 20\n[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ncontrol_topic = \"{topic}_control\"\n\
             partition_refresh_secs = 1\n[clickhouse]\nurl = \"{clickhouse_url}\"\ndatabase = \"{database}\"\n\
             [live]\nredis_url = \"{}\"\n[erasure]\nsalt = \"{ERASURE_SALT}\"\npoll_ms = 200\n",
            required_env("CLICKSTREAM_REDIS_URL")
        ),
    )
    .expect("engine config");
    file
}

/// Records covered by the newest checkpoint of each partition; `None` before the engine has
/// created its tables.
pub async fn checkpointed_records(clickhouse: &ClickHouse, database: &str) -> Option<usize> {
    let ready = clickhouse
        .query(&format!("SELECT count() FROM system.tables WHERE database = '{database}' AND name = '_checkpoints'"))
        .await;
    if ready.trim() != "1" {
        return None;
    }
    let covered = clickhouse
        .query(&format!(
            "SELECT sum(next) FROM (SELECT partition, max(next_offset) AS next FROM {database}._checkpoints GROUP BY partition)"
        ))
        .await;
    Some(covered.trim().parse().unwrap_or(0))
}

/// Waits until checkpoints cover `records` records: every sink has written everything.
pub async fn wait_until_checkpointed(
    clickhouse: &ClickHouse,
    database: &str,
    records: usize,
    cluster: &mut Cluster,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        cluster.assert_running();
        if checkpointed_records(clickhouse, database)
            .await
            .is_some_and(|covered| covered >= records)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "engine did not catch up with {records} records; logs:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// What every end-to-end test starts from: the servers, and a topic, a database and a
/// temporary directory of its own (so tests can run in parallel).
pub struct TestEnv {
    pub brokers: String,
    pub clickhouse: ClickHouse,
    pub topic: String,
    pub database: String,
    pub dir: PathBuf,
}

impl TestEnv {
    /// Fails (never skips) when the servers are not configured.
    pub async fn new(name: &str) -> TestEnv {
        let brokers = required_env("CLICKSTREAM_KAFKA_BROKERS");
        let clickhouse = ClickHouse {
            url: required_env("CLICKSTREAM_CLICKHOUSE_URL"),
            http: reqwest::Client::new(),
        };
        let suffix = format!(
            "{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let (topic, database) = (format!("{name}_{suffix}"), format!("{name}_{suffix}"));
        let dir = std::env::temp_dir().join(format!("clickstream-{name}-{suffix}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        create_topic(&brokers, &topic).await;
        TestEnv {
            brokers,
            clickhouse,
            topic,
            database,
            dir,
        }
    }
}

/// The ingest gateway, in-process, serving `tenants` over a real socket and producing to
/// `topic`.
pub async fn start_gateway(
    brokers: &str,
    topic: &str,
    tenants: &str,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    use ingest_gateway::kafka::{EventProducer, KafkaConfig};
    let state = std::sync::Arc::new(ingest_gateway::AppState {
        tenants: schemas::tenants::Tenants::parse(tenants).expect("tenants"),
        producer: EventProducer::new(&KafkaConfig {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            message_timeout_ms: 15_000,
            queue_max_messages: 100_000,
            linger_ms: 2,
        })
        .expect("producer"),
        limits: ingest_gateway::segment::Limits::default(),
        trust_forwarded_for: false,
        retry_after_secs: 1,
        metrics: Default::default(),
        rate_limiter: ingest_gateway::ratelimit::RateLimiter::local(),
        enricher: std::sync::Arc::new(
            ingest_gateway::enrich::Enricher::load(&Default::default()).expect("enrichment rules"),
        ),
        salts: ingest_gateway::salt::Salts::local(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let app =
        ingest_gateway::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    (address, server)
}

/// Every record of the topic with its position, read from the start of each partition until
/// at least `expected` arrived and nothing more shows up for two seconds. (High watermarks
/// would be cheaper, but tansu 0.6 reports them behind the log end.)
pub fn read_log(brokers: &str, topic: &str, expected: usize) -> Vec<operators::Decoded> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-verifier")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline
        && (log.len() < expected || quiet_since.elapsed() < std::time::Duration::from_secs(2))
    {
        if let Some(message) = consumer.poll(std::time::Duration::from_millis(100)) {
            let message = message.expect("record");
            let record =
                schemas::wire::decode(message.payload().expect("payload")).expect("decodes");
            // The gateway's warnings are not events: no oracle reads them.
            if let schemas::Record::Event(event) = record {
                log.push(operators::Decoded {
                    partition: message.partition(),
                    offset: message.offset(),
                    event: event.into(),
                });
            }
            quiet_since = std::time::Instant::now();
        }
    }
    log
}

/// Produces `events` (keyed like the gateway does) and returns them with the positions the
/// broker acknowledged, in order: the log the reference is computed from.
pub async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    events: &[schemas::Event],
) -> Vec<operators::Decoded> {
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let (key, payload) = (event.partition_key(), schemas::wire::encode(event));
        deliveries.push(
            producer
                .send_result(
                    rdkafka::producer::FutureRecord::to(topic)
                        .key(&key)
                        .payload(&payload),
                )
                .expect("enqueue"),
        );
    }
    let mut log = Vec::with_capacity(events.len());
    for (delivery, event) in deliveries.into_iter().zip(events) {
        let delivered = delivery
            .await
            .expect("delivery report")
            .expect("acknowledged");
        log.push(operators::Decoded {
            partition: delivered.partition,
            offset: delivered.offset,
            event: event.clone().into(),
        });
    }
    log
}

/// What a test that sends over HTTP needs: its own topic, database and directory, the gateway
/// in-process on a socket for one tenant `tenant` (write key `wk_<tenant>`), and a
/// two-process engine cluster.
pub struct GatewayPipeline {
    pub clickhouse: ClickHouse,
    pub database: String,
    pub dir: PathBuf,
    pub gateway: std::net::SocketAddr,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
    pub cluster: Cluster,
}

impl GatewayPipeline {
    pub async fn start(name: &str, tenant: &str) -> GatewayPipeline {
        let TestEnv {
            brokers,
            clickhouse,
            topic,
            database,
            dir,
        } = TestEnv::new(name).await;
        let tenants = format!(
            "[[tenants]]\nid='{tenant}'\nwrite_keys=['wk_{tenant}']\nread_keys=['rk_{tenant}']\ndomains=['{tenant}.example']\n"
        );
        let (gateway, server) = start_gateway(&brokers, &topic, &tenants).await;
        let config = engine_config(&dir, &brokers, &topic, &clickhouse.url, &database);
        let cluster = Cluster::start(&dir, &config, 2);
        GatewayPipeline {
            clickhouse,
            database,
            dir,
            gateway,
            server,
            cluster,
        }
    }

    /// Stops everything and drops the test's database and directory.
    pub async fn finish(self) {
        drop(self.cluster);
        self.server.abort();
        self.clickhouse
            .query(&format!("DROP DATABASE {}", self.database))
            .await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `message` to the control topic of the events topic `topic`.
pub async fn write_control(brokers: &str, topic: &str, message: &schemas::ControlMessage) {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let payload = serde_json::to_vec(message).expect("JSON");
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&format!("{topic}_control"))
                .key("control")
                .payload(&payload),
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("control record written");
}

/// Every record of the control topic of the events topic `topic`.
pub fn control_records(brokers: &str, topic: &str) -> Vec<schemas::ControlMessage> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let control = format!("{topic}_control");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "control-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(&control, 0, rdkafka::Offset::Beginning)
        .expect("partition");
    consumer.assign(&assignment).expect("assign");
    let (_, high) = consumer
        .fetch_watermarks(&control, 0, std::time::Duration::from_secs(30))
        .expect("watermarks");
    let mut records = Vec::new();
    let mut next = 0;
    while next < high {
        let message = consumer
            .poll(std::time::Duration::from_secs(30))
            .expect("a record before the high watermark")
            .expect("readable");
        next = message.offset() + 1;
        if let Some(Ok(record)) = message.payload().map(serde_json::from_slice) {
            records.push(record);
        }
    }
    records
}

/// Writes the erasure of `ids` of `tenant` to the control topic, as the query gateway would.
pub async fn request_erasure(
    brokers: &str,
    control_topic: &str,
    request_id: &str,
    tenant: &str,
    ids: &std::collections::BTreeSet<String>,
) {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let message = schemas::ControlMessage::Erase {
        request_id: request_id.into(),
        tenant: tenant.into(),
        id_hashes: ids
            .iter()
            .map(|id| schemas::erasure::id_hash(ERASURE_SALT, tenant, id))
            .collect(),
        requested_at_ms: chrono::Utc::now().timestamp_millis(),
        salt_check: schemas::erasure::salt_check(ERASURE_SALT),
    };
    let payload = serde_json::to_vec(&message).expect("JSON");
    producer
        .send(
            rdkafka::producer::FutureRecord::to(control_topic)
                .key(tenant)
                .payload(&payload),
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("control record written");
}

/// Waits until the engine records request `request_id` completed in `_deletions`.
pub async fn wait_for_erasure(
    clickhouse: &ClickHouse,
    database: &str,
    request_id: &str,
    cluster: &mut Cluster,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        cluster.assert_running();
        let status = clickhouse
            .query(&format!(
                "SELECT status FROM {database}._deletions WHERE request_id = '{request_id}' \
                 ORDER BY version DESC LIMIT 1"
            ))
            .await;
        if status.trim() == "completed" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "erasure {request_id} was not completed:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// `log` without the events of `tenant` that carry one of `ids` (the log an erasure of the
/// person with those ids leaves, by Segment's ids: anonymous, user, alias's previous).
pub fn without_person(
    log: &[operators::Decoded],
    tenant: &str,
    ids: &std::collections::BTreeSet<String>,
) -> Vec<operators::Decoded> {
    log.iter()
        .filter(|record| {
            let event = &record.event;
            event.tenant != tenant
                || ![&event.anonymous_id, &event.user_id, &event.previous_id]
                    .iter()
                    .any(|id| ids.contains(id.as_str()))
        })
        .cloned()
        .collect()
}

/// The ids of a person to erase: the most frequent non-placeholder user id among `events`
/// (each as its `[anonymousId, userId, previousId]`), with every id an event links to it,
/// transitively. Found from the ids sent, without the engine's rules: erasure matches ids,
/// not persons.
pub fn most_active_person(events: Vec<[String; 3]>) -> std::collections::BTreeSet<String> {
    let is_id = |id: &str| {
        !id.is_empty() && !operators::DEFAULT_PLACEHOLDER_IDS.contains(&id.to_lowercase().as_str())
    };
    let events: Vec<[String; 3]> = events
        .into_iter()
        .map(|ids| ids.map(|id| id.trim().to_owned()))
        .collect();
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for [_, user, _] in &events {
        if is_id(user) {
            *counts.entry(user).or_default() += 1;
        }
    }
    let user = counts
        .into_iter()
        .max_by_key(|(user, count)| (*count, *user))
        .map(|(user, _)| user.to_owned())
        .expect("the log has user ids");
    let mut ids = std::collections::BTreeSet::from([user]);
    loop {
        let before = ids.len();
        for event in &events {
            let linked: Vec<&String> = event.iter().filter(|id| is_id(id)).collect();
            if linked.iter().any(|id| ids.contains(*id)) {
                ids.extend(linked.into_iter().cloned());
            }
        }
        if ids.len() == before {
            return ids;
        }
    }
}
