//! ClickHouse 26 for tests: starts `deploy/chdb/server.py` (chdb-core behind ClickHouse's HTTP
//! interface) on a free port with a data directory of its own. Included by the engine's and
//! the query gateway's test helpers (`#[path]`), so both start it the same way.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running chdb server; killed, and its data removed, on drop.
pub struct Chdb {
    child: Child,
    /// `http://127.0.0.1:<port>`: statements run on chdb only.
    pub url: String,
    /// `<url>/dual`: statements run on chdb and on the `compare_with` server, and the two
    /// answers are compared (see [`Chdb::report`]).
    pub dual_url: String,
    /// The data directory.
    pub dir: PathBuf,
}

impl Chdb {
    /// Starts a server named `name`; `compare_with` is the ClickHouse URL `/dual` requests
    /// also go to, `config` a server configuration file (storage policies). Panics (never
    /// skips) when chdb is not installed: `deploy/test.sh` installs it (`ensure_chdb`).
    pub fn start(name: &str, compare_with: Option<&str>, config: Option<&Path>) -> Chdb {
        let python_path = std::env::var("CLICKSTREAM_CHDB_PYTHONPATH").unwrap_or_else(|_| {
            panic!("CLICKSTREAM_CHDB_PYTHONPATH is not set: run the tests through deploy/test.sh, which installs chdb-core")
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!(
            "clickstream-chdb-{name}-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("chdb directory");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/chdb/server.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg("--port")
            .arg(port.to_string())
            .arg("--path")
            .arg(dir.join("data"))
            .env("PYTHONPATH", python_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).expect("log file"));
        if let Some(url) = compare_with {
            command.arg("--compare-with").arg(url);
        }
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        let mut child = command.spawn().expect("python3 runs deploy/chdb/server.py");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the chdb server exited ({status}): {}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the chdb server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let url = format!("http://127.0.0.1:{port}");
        Chdb {
            child,
            dual_url: format!("{url}/dual"),
            url,
            dir,
        }
    }

    /// Requests served (`served`) and what `/dual` recorded: `{"statements": n, "equal": n, "differences": [{"statement",
    /// "settings", "difference", "reference", "chdb"}]}`.
    pub async fn report(&self, http: &reqwest::Client) -> serde_json::Value {
        http.get(format!("{}/report", self.url))
            .send()
            .await
            .expect("the chdb server answers")
            .json()
            .await
            .expect("a JSON report")
    }

    /// The server's log (chdb's own errors go there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Chdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
