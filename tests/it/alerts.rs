//! The example Prometheus configuration and alert rules in `config/prometheus/` (issue 18):
//! promtool (Debian's `prometheus` package, installed by `scripts/test`) checks their syntax and
//! runs their unit tests (each alert fires on trouble and stays silent on its healthy twin), and
//! every `custodian_*` series the rules name is one a live server exports.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::common::Deployment;
use crate::metrics::{scrape, Scrape};
use crate::policy::principal;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus")
}

/// Runs promtool in `config/prometheus`; returns (success, output).
fn promtool(args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("promtool ({e}): scripts/test installs Debian's prometheus"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_rules_and_the_scrape_config_pass_promtool_and_their_unit_tests() -> anyhow::Result<()> {
    let d = dir();
    for args in [
        &["check", "rules", "custodian-alerts.yml"][..],
        &["check", "config", "--syntax-only", "prometheus.yml"][..],
        &["test", "rules", "custodian-alerts.test.yml"][..],
    ] {
        let (ok, out) = promtool(args, &d);
        assert!(ok, "promtool {args:?}:\n{out}");
    }
    // The unit tests can fail: the same tests expecting the device alert silent do.
    let tmp = tempfile::tempdir()?;
    std::fs::copy(
        d.join("custodian-alerts.yml"),
        tmp.path().join("custodian-alerts.yml"),
    )?;
    let tests = std::fs::read_to_string(d.join("custodian-alerts.test.yml"))?;
    let wrong = tests.replacen(
        "alertname: CustodianStoreUnwritable\n        exp_alerts: []",
        "alertname: CustodianDeviceDown\n        exp_alerts: []",
        1,
    );
    assert_ne!(wrong, tests);
    std::fs::write(tmp.path().join("custodian-alerts.test.yml"), wrong)?;
    let (ok, out) = promtool(&["test", "rules", "custodian-alerts.test.yml"], tmp.path());
    assert!(!ok, "{out}");
    assert!(out.contains("CustodianDeviceDown"), "{out}");
    Ok(())
}

/// The `custodian_*` names the rules use.
fn rule_series() -> anyhow::Result<Vec<String>> {
    let rules = std::fs::read_to_string(dir().join("custodian-alerts.yml"))?;
    let mut names: Vec<String> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| {
            l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("custodian_"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Whether `name` (as a query names it) is a series family the scrape declares.
fn exported(scrape: &Scrape, name: &str) -> bool {
    ["counter", "gauge", "histogram"]
        .iter()
        .any(|kind| scrape.has_type(name, kind))
        || name
            .strip_suffix("_total")
            .is_some_and(|family| scrape.has_type(family, "counter"))
}

#[tokio::test]
async fn every_series_the_rules_name_is_exported_by_a_live_server() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let token = principal(&s, "prom-alerts", &["monitoring"], json!({})).await;
    let scrape = scrape(&s, &token).await;
    let names = rule_series()?;
    assert!(names.len() >= 9, "{names:?}");
    for name in &names {
        assert!(
            exported(&scrape, name),
            "{name} is not exported:\n{}",
            scrape.text
        );
    }
    // The check can fail: a name no server exports.
    assert!(!exported(&scrape, "custodian_no_such_series_total"));
    Ok(())
}
