//! What a benchmark needs running: the servers (started by the project's own `deploy/lib.sh`,
//! as the tests start them) and the project's processes, built in release mode and killed
//! when the stack is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The servers' addresses and the processes started for one benchmark.
#[derive(Debug)]
pub struct Stack {
    /// The repository.
    pub root: PathBuf,
    /// Logs and configuration of this run.
    pub dir: PathBuf,
    /// ClickHouse HTTP URL.
    pub clickhouse_url: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Redis URL.
    pub redis_url: String,
    /// The GeoIP files the ingest gateway enriches with (comma-separated, as `--geoip`).
    pub geoip: String,
    /// The `/metrics` URL of the engine started last.
    pub engine_metrics: Option<String>,
    children: Vec<(String, Child)>,
}

impl Stack {
    /// Starts (or finds running) ClickHouse, Redis and the broker, and builds the release
    /// binaries of the engine and the gateways.
    pub fn up(root: &Path, dir: &Path) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(dir)?;
        let output = Command::new("bash")
            .arg("-c")
            .arg("source deploy/lib.sh && servers_up >&2 && ensure_geoip >&2 && echo \"$CLICKSTREAM_CLICKHOUSE_URL $CLICKSTREAM_KAFKA_BROKERS $CLICKSTREAM_REDIS_URL $CLICKSTREAM_GEOIP\"")
            .current_dir(root)
            .stderr(Stdio::inherit())
            .output()
            .context("running deploy/lib.sh servers_up")?;
        if !output.status.success() {
            bail!("deploy/lib.sh could not start the servers");
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let mut urls = text.split_whitespace().map(str::to_owned);
        let (Some(clickhouse_url), Some(brokers), Some(redis_url), Some(geoip)) =
            (urls.next(), urls.next(), urls.next(), urls.next())
        else {
            bail!("deploy/lib.sh printed no server addresses: {text}");
        };
        // An A/B of two engines copies one over `target/release/engine`: building would
        // replace it with the source's.
        if std::env::var_os("CLICKSTREAM_BENCH_PREBUILT").is_none() {
            build_release(root)?;
        }
        Ok(Stack {
            root: root.to_owned(),
            dir: dir.to_owned(),
            clickhouse_url,
            brokers,
            redis_url,
            geoip,
            engine_metrics: None,
            children: Vec::new(),
        })
    }

    fn binary(&self, name: &str) -> PathBuf {
        self.root.join("target/release").join(name)
    }

    /// Starts `binary` with `args`, its output in `<dir>/<name>.log`; returns its pid.
    pub fn spawn(&mut self, name: &str, binary: &str, args: &[String]) -> anyhow::Result<u32> {
        // Appended: a process started again under its name (a restart) keeps the first log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(self.binary(binary))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        Ok(pid)
    }

    /// Stops every process this stack started.
    pub fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }

    /// Drops the databases earlier runs left (`bench_<part>_<time>`): a part that ends early or
    /// is killed leaves its database, and ClickHouse goes on merging its parts in the
    /// background, on the cores the next part measures. A 30-minute memory run leaves
    /// gigabytes; a tree whose ClickHouse held twenty such databases ran `bench pipeline` 17 %
    /// slower than a fresh one (2026-12-06).
    pub async fn drop_leftover_databases(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let names = http
            .post(&self.clickhouse_url)
            .body("SELECT name FROM system.databases WHERE startsWith(name, 'bench_')")
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        for name in names.lines().filter(|name| !name.is_empty()) {
            http.post(&self.clickhouse_url)
                .body(format!("DROP DATABASE IF EXISTS `{name}`"))
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("dropping the leftover database {name}"))?;
        }
        Ok(())
    }

    /// Stops the process started as `name`.
    pub fn stop(&mut self, name: &str) {
        self.children.retain_mut(|(child_name, child)| {
            if child_name == name {
                let _ = child.kill();
                let _ = child.wait();
                false
            } else {
                true
            }
        });
    }

    /// A gateway `binary` listening on `port` (metrics on the next port) with the tenants
    /// file and `args`, once `ready` (a path) answers 200; its base URL.
    async fn gateway(
        &mut self,
        binary: &str,
        port: u16,
        tenants: &Path,
        args: &[&str],
        ready: &str,
    ) -> anyhow::Result<String> {
        let mut all = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".to_owned(),
            format!("127.0.0.1:{}", port + 1),
            "--tenants".to_owned(),
            tenants.display().to_string(),
        ];
        all.extend(args.iter().map(|arg| (*arg).to_owned()));
        self.spawn(binary, binary, &all)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{url}{ready}")).await?;
        Ok(url)
    }

    /// An ingest gateway on `port` writing to `topic`, ready when `/readyz` answers 200.
    pub async fn ingest_gateway(
        &mut self,
        port: u16,
        topic: &str,
        tenants: &Path,
    ) -> anyhow::Result<String> {
        let (brokers, redis, geoip) = (
            self.brokers.clone(),
            self.redis_url.clone(),
            self.geoip.clone(),
        );
        let args = [
            "--kafka-brokers",
            &brokers,
            "--topic",
            topic,
            "--redis-url",
            &redis,
            "--geoip",
            &geoip,
        ];
        self.gateway("ingest-gateway", port, tenants, &args, "/readyz")
            .await
    }

    /// A query gateway on `port` over `database`.
    pub async fn query_gateway(
        &mut self,
        port: u16,
        database: &str,
        tenants: &Path,
    ) -> anyhow::Result<String> {
        let (clickhouse, brokers) = (self.clickhouse_url.clone(), self.brokers.clone());
        // Erasure goes to the control topic of the engine reading `database` (its topic has
        // the same name: see `pipeline`).
        let control = format!("{database}_control");
        let args = [
            "--clickhouse-url",
            &clickhouse,
            "--database",
            database,
            "--kafka-brokers",
            &brokers,
            "--control-topic",
            &control,
            "--erasure-salt",
            ERASURE_SALT,
        ];
        self.gateway("query-gateway", port, tenants, &args, "/healthz")
            .await
    }

    /// A fresh topic and database named `bench_<part>_<time>`, the tenants file written, an
    /// engine reading the one into the other and an ingest gateway on `port` writing to it:
    /// `(topic = database name, engine pid, gateway URL)`.
    pub async fn pipeline(
        &mut self,
        part: &str,
        tenants: &str,
        port: u16,
        workers: usize,
    ) -> anyhow::Result<(String, u32, String)> {
        let name = format!("bench_{part}_{}", chrono::Utc::now().timestamp());
        crate::create_topic(&self.brokers, &name, PARTITIONS).await?;
        let tenants_file = self.dir.join(format!("tenants-{part}.toml"));
        std::fs::write(&tenants_file, tenants)?;
        let engine = self.engine(&name, &name, workers)?;
        let ingest = self.ingest_gateway(port, &name, &tenants_file).await?;
        Ok((name, engine, ingest))
    }

    /// As [`Stack::pipeline`], with a query gateway on `query_port` over the database, once
    /// the engine has created it: `(database, ingest gateway URL, query gateway URL)`.
    pub async fn pipeline_with_queries(
        &mut self,
        part: &str,
        tenants: &str,
        (ingest_port, query_port): (u16, u16),
        workers: usize,
    ) -> anyhow::Result<(String, String, String)> {
        let (database, _, ingest) = self.pipeline(part, tenants, ingest_port, workers).await?;
        let tenants_file = self.dir.join(format!("tenants-{part}.toml"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let query = self
            .query_gateway(query_port, &database, &tenants_file)
            .await?;
        Ok((database, ingest, query))
    }

    /// A one-process engine of `workers` workers reading `topic` into `database`; its pid.
    pub fn engine(&mut self, topic: &str, database: &str, workers: usize) -> anyhow::Result<u32> {
        let config = self.dir.join(format!("engine-{database}.toml"));
        // A port free now, for the engine to bind (a benchmark runs nothing else that binds).
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        std::fs::write(
            &config,
            format!(
                "epoch_ms = 500\n[kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\ncontrol_topic = \"{topic}_control\"\npartitions = {PARTITIONS}\n\
                 [clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n[metrics]\nlisten = \"{metrics}\"\n\
                 [erasure]\nsalt = \"{ERASURE_SALT}\"\n",
                self.brokers, self.clickhouse_url
            ),
        )?;
        self.engine_metrics = Some(format!("http://{metrics}/metrics"));
        let args = vec![
            "-w".to_owned(),
            workers.to_string(),
            "--config".to_owned(),
            config.display().to_string(),
        ];
        self.spawn("engine", "engine", &args)
    }
}

/// Partitions of the topics the stack creates for the engine.
pub const PARTITIONS: i32 = 12;

/// The benchmark stack's salt of erased ids' hashes (engine and query gateway).
const ERASURE_SALT: &str = "bench erasure salt";

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_all();
    }
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the engine's `/metrics` says about its state and its position.
#[derive(Debug, Default, Clone)]
pub struct EngineGauges {
    /// Entries of each piece of state (`clickstream_engine_state_entries`, summed over
    /// workers), by kind.
    pub state: std::collections::BTreeMap<String, f64>,
    /// Records between the log's end and the engine's position, summed over partitions
    /// (`clickstream_engine_consumer_lag`; tansu's high watermarks lag a little, so it reads
    /// a little low).
    pub consumer_lag: f64,
    /// Records read but not yet checkpointed (`clickstream_engine_pending_records`).
    pub pending_records: f64,
    /// Bytes librdkafka fetched ahead of the engine (`clickstream_engine_fetch_queue_bytes`,
    /// summed over workers).
    pub fetch_queue_bytes: f64,
    /// What each allocator holds (`clickstream_engine_heap_bytes`), by "allocator kind".
    pub heap: std::collections::BTreeMap<String, f64>,
}

/// Reads [`EngineGauges`] from the engine's `/metrics` at `url`.
pub async fn engine_gauges(url: &str) -> anyhow::Result<EngineGauges> {
    let text = reqwest::get(url).await?.error_for_status()?.text().await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))?;
    let mut gauges = EngineGauges::default();
    for sample in scrape.samples {
        let value = match sample.value {
            prometheus_parse::Value::Gauge(value) | prometheus_parse::Value::Untyped(value) => {
                value
            }
            _ => continue,
        };
        match sample.metric.as_str() {
            "clickstream_engine_consumer_lag" => gauges.consumer_lag += value,
            "clickstream_engine_pending_records" => gauges.pending_records += value,
            "clickstream_engine_fetch_queue_bytes" => gauges.fetch_queue_bytes += value,
            "clickstream_engine_heap_bytes" => {
                if let (Some(allocator), Some(kind)) =
                    (sample.labels.get("allocator"), sample.labels.get("kind"))
                {
                    gauges.heap.insert(format!("{allocator} {kind}"), value);
                }
            }
            "clickstream_engine_state_entries" => {
                if let Some(kind) = sample.labels.get("kind") {
                    *gauges.state.entry(kind.to_owned()).or_insert(0.0) += value;
                }
            }
            _ => {}
        }
    }
    Ok(gauges)
}

/// Resident memory of a process, bytes (`/proc/<pid>/statm`, in pages of 4 KiB).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

/// Builds the release binaries the stack runs (the engine and both gateways).
fn build_release(root: &Path) -> anyhow::Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet"])
        .args([
            "-p",
            "clickstream-engine",
            "-p",
            "clickstream-ingest-gateway",
        ])
        .args(["-p", "clickstream-query-gateway"])
        .current_dir(root)
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("building the release binaries failed");
    }
    Ok(())
}
