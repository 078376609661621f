//! The whole path on loopback: upstream, sidecar, and Envoy with the filter,
//! configured from a shipped Envoy config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::agents::Agent;
use crate::envoy::{self, Envoy, Ports};
use crate::sidecar::Sidecar;
use crate::upstream::Upstream;

/// How to start a stack.
pub struct Options {
    /// Envoy worker threads. Default 2.
    pub concurrency: u32,
    /// The Envoy config to start from, relative to the repo root.
    /// Default `envoy/envoy.yaml`.
    pub template: PathBuf,
    /// Where evidence goes (`audit.db`, logs, rendered config). Default: a
    /// temporary directory removed on drop.
    pub dir: Option<PathBuf>,
    /// Changes to the plugin configuration, after the agents' keys are set.
    pub patch: Box<dyn Fn(&mut serde_json::Value)>,
    /// More `warrant-audit serve` flags for the sidecar.
    pub sidecar_flags: Vec<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            concurrency: 2,
            template: PathBuf::from("envoy/envoy.yaml"),
            dir: None,
            patch: Box::new(|_| {}),
            sidecar_flags: Vec::new(),
        }
    }
}

/// A running stack. Dropping it stops every process.
pub struct Stack {
    // Field order is drop order: Envoy first, then the sidecar, then the
    // upstream, and the directory last.
    pub envoy: Envoy,
    pub sidecar: Sidecar,
    pub upstream: Upstream,
    pub alice: Agent,
    pub bob: Agent,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", self.body))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

impl Stack {
    /// Starts upstream, sidecar and Envoy. Agents `alice` and `bob` get
    /// fresh keys, set in the plugin configuration.
    pub fn start(options: Options) -> Stack {
        let (temp, dir) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).expect("evidence dir");
                (None, dir.clone())
            }
            None => {
                let temp =
                    tempfile::Builder::new().prefix("warrant-e2e-").tempdir().expect("tempdir");
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let alice = Agent::new("alice");
        let bob = Agent::new("bob");
        let upstream = Upstream::start();
        let sidecar = Sidecar::start_flagged(
            &dir.join("audit.db"),
            &dir,
            "127.0.0.1:0",
            &options.sidecar_flags,
        );
        let config = dir.join("envoy.yaml");
        let keys =
            serde_json::json!({ "alice": alice.public_base64(), "bob": bob.public_base64() });
        let patch = &options.patch;
        envoy::render(
            &crate::repo_root().join(&options.template),
            &config,
            Ports { audit: sidecar.port, upstream: upstream.port() },
            &|json| {
                json["keys"] = keys.clone();
                patch(json);
            },
        );
        let envoy = Envoy::start(&config, &dir, options.concurrency);
        Stack { envoy, sidecar, upstream, alice, bob, dir, _temp: temp }
    }

    /// The audit database path.
    pub fn db(&self) -> PathBuf {
        self.dir.join("audit.db")
    }

    /// Sends a request through Envoy.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let url = format!("http://127.0.0.1:{}{path}", self.envoy.port);
        let mut request = ureq::request(method, &url).timeout(Duration::from_secs(20));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(body) => request.send_bytes(body),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("{method} {path} failed: {e}"),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .filter_map(|n| response.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let body = response.into_string().unwrap_or_default();
        Reply { status, headers, body }
    }

    /// POSTs a JSON document.
    pub fn post_json(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send("POST", path, &all, Some(body.to_string().as_bytes()))
    }

    /// Stops Envoy and then the sidecar (gracefully), leaving the evidence
    /// (a temporary directory lives as long as the returned value).
    pub fn stop(mut self) -> Evidence {
        self.envoy.process.stop(Duration::from_secs(10));
        self.sidecar.stop();
        Evidence { dir: self.dir.clone(), _temp: self._temp.take() }
    }

    /// Records in the chain, as (seq, decision, from, to, message_id).
    pub fn records(&self) -> Vec<Record> {
        records(&self.db())
    }
}

/// What a stopped stack leaves: its directory (`audit.db`, logs, config).
pub struct Evidence {
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Evidence {
    /// The audit database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("audit.db")
    }
}

/// One stored record, as the tests read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: i64,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub status: String,
    pub decision: String,
    pub reason: String,
    pub http_status: i64,
    pub body_sha256: String,
    pub findings: String,
    pub method: String,
    pub path: String,
    pub session_id: String,
    pub node: String,
    pub notes: String,
    pub delegation_chain_hash: String,
    pub delegation_root: String,
    pub delegation_depth: i64,
    pub delegation_path: String,
    /// Microseconds from the request's arrival to its record.
    pub latency_us: i64,
}

/// Reads every record of a chain database (read-only).
pub fn records(db: &Path) -> Vec<Record> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open audit db");
    let mut stmt = conn
        .prepare(
            "SELECT seq, message_id, from_agent, to_agent, status, decision, reason, http_status,
                    body_sha256, findings, method, path, session_id, node, notes,
                    delegation_chain_hash, delegation_root, delegation_depth, delegation_path,
                    latency_us
             FROM entries ORDER BY seq",
        )
        .expect("query");
    stmt.query_map([], |r| {
        Ok(Record {
            seq: r.get(0)?,
            message_id: r.get(1)?,
            from: r.get(2)?,
            to: r.get(3)?,
            status: r.get(4)?,
            decision: r.get(5)?,
            reason: r.get(6)?,
            http_status: r.get(7)?,
            body_sha256: r.get(8)?,
            findings: r.get(9)?,
            method: r.get(10)?,
            path: r.get(11)?,
            session_id: r.get(12)?,
            node: r.get(13)?,
            notes: r.get(14)?,
            delegation_chain_hash: r.get(15)?,
            delegation_root: r.get(16)?,
            delegation_depth: r.get(17)?,
            delegation_path: r.get(18)?,
            latency_us: r.get(19)?,
        })
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("records")
}
