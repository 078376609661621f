//! The real Envoy with the real filter, configured from `envoy/envoy.yaml`.
//!
//! [`render`] rewrites a copy of a shipped config for a test: ports 0 for
//! the listener and admin (Envoy picks free ones; the harness reads them
//! back from the admin API), the sidecar's and upstream's real ports, the
//! absolute path of the `.wasm`, and the plugin configuration JSON passed
//! through a caller's patch.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;

use crate::process::Guard;
use crate::wait;

/// Ports of the clusters a config refers to.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub audit: u16,
    pub upstream: u16,
}

/// Renders `template` (a path under the repo) into `out`, patching the
/// plugin configuration with `patch`.
pub fn render(template: &Path, out: &Path, ports: Ports, patch: &dyn Fn(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(template).expect("read envoy template");
    let mut doc: Value = serde_yaml::from_str(&text).expect("template is YAML");
    set(&mut doc, &["admin", "address", "socket_address", "port_value"], 0.into());
    let resources = doc.get_mut("static_resources").expect("static_resources");
    for listener in
        resources.get_mut("listeners").and_then(Value::as_sequence_mut).expect("listeners")
    {
        set(listener, &["address", "socket_address", "port_value"], 0.into());
        for_each_wasm_filter(listener, &mut |config| {
            let wasm = crate::wasm_path();
            set(
                config,
                &["vm_config", "code", "local", "filename"],
                wasm.display().to_string().into(),
            );
            let value = config
                .get_mut("configuration")
                .and_then(|c| c.get_mut("value"))
                .expect("configuration.value");
            let mut json: serde_json::Value =
                serde_json::from_str(value.as_str().expect("StringValue"))
                    .expect("plugin config is JSON");
            patch(&mut json);
            *value = json.to_string().into();
        });
    }
    for cluster in resources.get_mut("clusters").and_then(Value::as_sequence_mut).expect("clusters")
    {
        let port = match cluster.get("name").and_then(Value::as_str) {
            Some("warrant_audit") => ports.audit,
            Some("demo_upstream") => ports.upstream,
            _ => continue,
        };
        let endpoints = cluster
            .get_mut("load_assignment")
            .and_then(|l| l.get_mut("endpoints"))
            .and_then(Value::as_sequence_mut)
            .expect("endpoints");
        for group in endpoints {
            for lb in group
                .get_mut("lb_endpoints")
                .and_then(Value::as_sequence_mut)
                .expect("lb_endpoints")
            {
                set(
                    lb,
                    &["endpoint", "address", "socket_address", "port_value"],
                    u64::from(port).into(),
                );
            }
        }
    }
    std::fs::write(out, serde_yaml::to_string(&doc).expect("render")).expect("write config");
}

fn for_each_wasm_filter(listener: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    let chains =
        listener.get_mut("filter_chains").and_then(Value::as_sequence_mut).expect("filter_chains");
    for chain in chains {
        for filter in chain.get_mut("filters").and_then(Value::as_sequence_mut).expect("filters") {
            let Some(http) = filter.get_mut("typed_config").and_then(|t| t.get_mut("http_filters"))
            else {
                continue;
            };
            for http_filter in http.as_sequence_mut().expect("http_filters") {
                if http_filter.get("name").and_then(Value::as_str)
                    == Some("envoy.filters.http.wasm")
                {
                    f(http_filter
                        .get_mut("typed_config")
                        .and_then(|t| t.get_mut("config"))
                        .expect("wasm config"));
                }
            }
        }
    }
}

fn set(node: &mut Value, path: &[&str], value: Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut node = node;
    for key in parents {
        node = node.get_mut(*key).unwrap_or_else(|| panic!("missing {key} in {path:?}"));
    }
    node.as_mapping_mut().expect("mapping")[&Value::from(*last)] = value;
}

/// A running Envoy.
pub struct Envoy {
    pub process: Guard,
    pub admin: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Envoy {
    /// Starts Envoy on `config` with `concurrency` workers and waits until
    /// it is ready and its listener is bound.
    pub fn start(config: &Path, dir: &Path, concurrency: u32) -> Envoy {
        Envoy::start_logging(config, dir, concurrency, "wasm:info")
    }

    /// Like [`Envoy::start`] with `--component-log-level COMPONENTS` (the
    /// default is `wasm:info`; `wasm:debug` logs the filter's debug lines).
    pub fn start_logging(config: &Path, dir: &Path, concurrency: u32, components: &str) -> Envoy {
        let log = dir.join("envoy.log");
        let admin_file = dir.join("envoy-admin.txt");
        let _ = std::fs::remove_file(&admin_file);
        let child = Command::new(crate::envoy_bin())
            .arg("-c")
            .arg(config)
            .args(["--concurrency", &concurrency.to_string(), "--disable-hot-restart"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .args(["--log-level", "warn", "--component-log-level", components])
            .arg("--log-path")
            .arg(&log)
            .current_dir(crate::repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn envoy");
        let mut process = Guard::new("envoy", child);
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        let admin = wait::until(Duration::from_secs(60), "envoy's admin address", || {
            if let Ok(Some(status)) = process.child().try_wait() {
                panic!("envoy exited with {status} during start-up; log:\n{}", log_text());
            }
            std::fs::read_to_string(&admin_file)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        });
        wait::until(Duration::from_secs(60), "envoy /ready", || {
            ureq::get(&format!("http://{admin}/ready")).call().ok().filter(|r| r.status() == 200)
        });
        let port = wait::until(Duration::from_secs(30), "envoy's listener port", || {
            let body = ureq::get(&format!("http://{admin}/listeners?format=json"))
                .call()
                .ok()?
                .into_string()
                .ok()?;
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            json["listener_statuses"][0]["local_address"]["socket_address"]["port_value"].as_u64()
        });
        Envoy { process, admin, port: u16::try_from(port).expect("port"), log }
    }

    /// A stat's value from `/stats?format=json` (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        let body = ureq::get(&format!(
            "http://{}/stats?format=json&filter=^{}$",
            self.admin,
            name.replace('.', "\\.")
        ))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["stats"]
            .as_array()
            .and_then(|stats| stats.iter().find(|s| s["name"] == name))
            .and_then(|s| s["value"].as_u64())
            .unwrap_or(0)
    }

    /// Panics unless every Wasm VM failure and reload counter in
    /// `/stats?filter=wasm` is 0: no VM of the filter trapped.
    pub fn assert_no_vm_failure(&self) {
        let stats = ureq::get(&format!("http://{}/stats?filter=wasm", self.admin))
            .call()
            .expect("envoy admin stats")
            .into_string()
            .expect("stats text");
        for line in stats.lines() {
            let (name, value) = line.split_once(": ").unwrap_or((line, "0"));
            if name.contains("fail") || name.contains("reload") {
                assert_eq!(value.trim(), "0", "wasm stat {name} is {value}; all stats:\n{stats}");
            }
        }
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `envoy --mode validate -c CONFIG` from the repo root; returns
/// (success, combined output).
pub fn validate(config: &Path) -> (bool, String) {
    let output = Command::new(crate::envoy_bin())
        .args(["--mode", "validate", "-c"])
        .arg(config)
        .args(["--log-level", "error"])
        .current_dir(crate::repo_root())
        .output()
        .expect("run envoy --mode validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}
