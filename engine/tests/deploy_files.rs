//! The operator's files in `deploy/`: the Prometheus configuration and alert rules pass
//! `promtool` (Debian's `prometheus` package) and their unit tests, the Kubernetes manifests
//! validate against the API's schemas offline (`kubernetes-validate` from PyPI), and every
//! metric the alerts and the Grafana dashboard use is one the processes export. The example
//! storage configuration is well-formed and has the volumes the example engine configuration
//! moves rows to, and that configuration is one the engine accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!("{command:?} cannot run ({e}): run the tests with deploy/test.sh, which installs it")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn prometheus_configuration_and_alert_rules_pass_promtool() {
    let dir = deploy().join("prometheus");
    let checked = run(Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir));
    assert!(checked.contains("9 rules found"), "{checked}");
    let tested = run(Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn kubernetes_manifests_validate_offline() {
    let validator = std::env::var("CLICKSTREAM_KUBE_VALIDATE_DIR").unwrap_or_else(|_| {
        panic!("CLICKSTREAM_KUBE_VALIDATE_DIR is not set: run the tests with deploy/test.sh, which installs kubernetes-validate")
    });
    let manifests: Vec<PathBuf> = std::fs::read_dir(deploy().join("k8s"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 4, "{manifests:?}");
    let output = run(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
        .args(&manifests)
        .env("PYTHONPATH", validator));
    // Every resource passed, among them the engine's StatefulSet and both gateways.
    for resource in [
        "statefulset/clickstream-engine",
        "service/clickstream-engine",
        "deployment/clickstream-ingest-gateway",
        "deployment/clickstream-query-gateway",
    ] {
        assert!(
            output.contains(&format!("passed for resource {resource}")),
            "{output}"
        );
    }
    assert!(!output.contains("did not validate"), "{output}");
}

/// The names a text mentions that look like clickstream metrics.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("clickstream_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn alerts_and_the_dashboard_use_only_exported_metrics() {
    // Families appear once they have a sample: give the labelled ones one each.
    let ingest = ingest_gateway::metrics::Metrics::default();
    ingest
        .requests
        .get_or_create(&ingest_gateway::metrics::RequestLabels {
            route: "track",
            status: 200,
        })
        .inc();
    let engine = clickstream_engine::metrics::Metrics::default();
    engine.record_state(0, &Default::default());
    engine
        .consumer_lag
        .get_or_create(&clickstream_engine::metrics::PartitionLabels { partition: 0 })
        .set(0);
    let query = query_gateway::metrics::Metrics::default().render();
    let (ingest, engine) = (ingest.render(), engine.render());
    let exported = metric_names(&format!("{ingest}{query}{engine}"));
    let used = [
        std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap(),
        std::fs::read_to_string(deploy().join("grafana/clickstream.json")).unwrap(),
    ];
    let dashboard: serde_json::Value = serde_json::from_str(&used[1]).expect("dashboard JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
    let mut unknown = Vec::new();
    for name in used.iter().flat_map(|text| metric_names(text)) {
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        if !exported.contains(&name) && !exported.contains(base) {
            unknown.push(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported by any process: {unknown:?}\nexported: {exported:?}"
    );
}

#[test]
fn the_example_storage_policy_has_the_volumes_the_engine_configuration_names() {
    let policy = run(Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.etree.ElementTree as t; r = t.parse(sys.argv[1]).getroot(); \
         print(','.join(v.tag for v in r.find('storage_configuration/policies/tiered/volumes')))",
        )
        .arg(deploy().join("clickhouse/storage.xml")));
    assert_eq!(policy.trim(), "hot,warm,cold");
    // The manifest's engine configuration, its commented tiers switched on, is one the
    // engine accepts.
    let k8s = std::fs::read_to_string(deploy().join("k8s/config.yaml")).unwrap();
    let start = k8s
        .find("engine.toml: |")
        .expect("the engine's configuration")
        + 15;
    let end = k8s[start..]
        .find("---")
        .map_or(k8s.len(), |end| start + end);
    let toml: String = k8s[start..end]
        .lines()
        .map(|line| line.trim_start().trim_start_matches("# "))
        .filter(|line| !line.starts_with("With deploy/"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(toml.contains("storage_policy = \"tiered\""), "{toml}");
    let config = std::env::temp_dir().join(format!("engine-tiers-{}.toml", std::process::id()));
    std::fs::write(&config, toml).unwrap();
    let loaded = clickstream_engine::config::EngineConfig::load(Some(&config)).unwrap();
    assert_eq!(loaded.clickhouse.tiers.len(), 2);
    let _ = std::fs::remove_file(config);
}
