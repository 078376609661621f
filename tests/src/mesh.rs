//! Two hops on loopback, the way agents talk in a mesh: agent A's outbound
//! Envoy (node `hop-a`) forwards to agent B's inbound Envoy (node `hop-b`),
//! which forwards to agent B itself (the recording [`Upstream`]). Each hop
//! runs the real filter and has its own audit sidecar and chain, as each pod
//! would.
//!
//! ```text
//!  client ──► 127.0.0.2  Envoy A ──► 127.0.0.3  Envoy B ──► 127.0.0.1  agent B
//!               │ gRPC                  │ gRPC
//!               ▼                       ▼
//!             127.0.0.2  sidecar A    127.0.0.3  sidecar B
//! ```
//!
//! Each hop's Envoy and sidecar listen on the hop's own loopback address
//! ([`HOP_A_ADDRESS`], [`HOP_B_ADDRESS`]; Linux routes all of 127/8 to `lo`,
//! so nothing has to be created or removed). Agent B is the harness's
//! [`Upstream`], which binds 127.0.0.1. Ports are free ones, read back from
//! the processes.
//!
//! Main types: [`Mesh`] (both hops and the upstream, stopped on drop),
//! [`Hop`] (one Envoy with its sidecar), [`HopRecord`] (a stored record with
//! the columns that matter across hops).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::agents::Agent;
use crate::envoy::{self, Envoy, Ports};
use crate::sidecar::Sidecar;
use crate::stack::Reply;
use crate::upstream::Upstream;

/// Agent A's pod: its outbound Envoy and its audit sidecar.
pub const HOP_A_ADDRESS: &str = "127.0.0.2";
/// Agent B's pod: its inbound Envoy and its audit sidecar.
pub const HOP_B_ADDRESS: &str = "127.0.0.3";

/// A plugin configuration patch.
pub type Patch = Box<dyn Fn(&mut serde_json::Value)>;

/// How to start a mesh.
pub struct Options {
    /// Changes to hop A's plugin configuration (after `node` and `keys`).
    /// Default: none.
    pub patch_a: Patch,
    /// Changes to hop B's plugin configuration (after `node` and `keys`).
    /// Default: none.
    pub patch_b: Patch,
}

impl Default for Options {
    fn default() -> Options {
        Options { patch_a: Box::new(|_| {}), patch_b: Box::new(|_| {}) }
    }
}

/// One hop: an Envoy with the filter and its own sidecar.
pub struct Hop {
    // Field order is drop order: Envoy before its sidecar.
    pub envoy: Envoy,
    pub sidecar: Sidecar,
    /// The node name written in this hop's records.
    pub node: String,
    /// The loopback address its Envoy and sidecar listen on.
    pub address: String,
    /// Its evidence: `audit.db`, logs, the rendered `envoy.yaml`.
    pub dir: PathBuf,
}

impl Hop {
    /// Starts a sidecar and an Envoy on `address`, rendered from
    /// `envoy/envoy.yaml`, whose upstream is `upstream` (address, port).
    fn start(
        node: &str,
        address: &str,
        dir: PathBuf,
        upstream: (&str, u16),
        keys: &serde_json::Value,
        patch: &dyn Fn(&mut serde_json::Value),
    ) -> Hop {
        std::fs::create_dir_all(&dir).expect("hop dir");
        let sidecar = Sidecar::start_on(&dir.join("audit.db"), &dir, &format!("{address}:0"));
        let config = dir.join("envoy.yaml");
        envoy::render(
            &crate::repo_root().join("envoy/envoy.yaml"),
            &config,
            Ports { audit: sidecar.port, upstream: upstream.1 },
            &|json| {
                json["node"] = node.into();
                json["keys"] = keys.clone();
                patch(json);
            },
        );
        set_addresses(&config, address, address, upstream.0);
        let envoy = Envoy::start(&config, &dir, 2);
        Hop { envoy, sidecar, node: node.to_string(), address: address.to_string(), dir }
    }

    /// The audit database.
    pub fn db(&self) -> PathBuf {
        self.dir.join("audit.db")
    }

    /// This hop's records, in chain order.
    pub fn records(&self) -> Vec<HopRecord> {
        records(&self.db())
    }

    fn stop(&mut self) {
        self.envoy.process.stop(Duration::from_secs(10));
        self.sidecar.stop();
    }
}

/// Both hops and agent B. Dropping it stops every process.
pub struct Mesh {
    // Field order is drop order: the client-facing hop first, agent B last,
    // the directory after everything.
    pub a: Hop,
    pub b: Hop,
    pub upstream: Upstream,
    pub alice: Agent,
    pub bob: Agent,
    _temp: tempfile::TempDir,
}

impl Mesh {
    /// Starts agent B, then hop B in front of it, then hop A in front of
    /// hop B. Agents `alice` and `bob` get fresh keys, known to both hops.
    pub fn start(options: Options) -> Mesh {
        let temp = tempfile::Builder::new().prefix("warrant-mesh-").tempdir().expect("tempdir");
        let alice = Agent::new("alice");
        let bob = Agent::new("bob");
        let keys =
            serde_json::json!({ "alice": alice.public_base64(), "bob": bob.public_base64() });
        let upstream = Upstream::start();
        let b = Hop::start(
            "hop-b",
            HOP_B_ADDRESS,
            temp.path().join("hop-b"),
            ("127.0.0.1", upstream.port()),
            &keys,
            &*options.patch_b,
        );
        let a = Hop::start(
            "hop-a",
            HOP_A_ADDRESS,
            temp.path().join("hop-a"),
            (HOP_B_ADDRESS, b.envoy.port),
            &keys,
            &*options.patch_a,
        );
        Mesh { a, b, upstream, alice, bob, _temp: temp }
    }

    /// Sends a request to hop A, as agent A's client would.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let url = format!("http://{}:{}{path}", self.a.address, self.a.envoy.port);
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
            Err(e) => panic!("{method} {path} through {url} failed: {e}"),
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

    /// POSTs a JSON document to hop A.
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

    /// Stops both hops (Envoy, then its sidecar, gracefully), leaving the
    /// evidence; the directory lives as long as the returned value.
    pub fn stop(mut self) -> Evidence {
        self.a.stop();
        self.b.stop();
        Evidence { a: self.a.db(), b: self.b.db(), _temp: self._temp }
    }
}

/// What a stopped mesh leaves: each hop's audit database.
pub struct Evidence {
    pub a: PathBuf,
    pub b: PathBuf,
    _temp: tempfile::TempDir,
}

/// One stored record, with the columns a multi-hop test looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopRecord {
    pub seq: i64,
    pub message_id: String,
    pub node: String,
    pub from: String,
    pub to: String,
    pub status: String,
    pub decision: String,
    pub http_status: i64,
    pub findings: String,
    pub session_id: String,
    pub delegation_chain_hash: String,
    pub delegation_root: String,
    pub delegation_depth: i64,
    pub delegation_path: String,
}

/// Reads every record of a chain database (read-only).
pub fn records(db: &Path) -> Vec<HopRecord> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open audit db");
    let mut stmt = conn
        .prepare(
            "SELECT seq, message_id, node, from_agent, to_agent, status, decision, http_status,
                    findings, session_id, delegation_chain_hash, delegation_root,
                    delegation_depth, delegation_path
             FROM entries ORDER BY seq",
        )
        .expect("query");
    stmt.query_map([], |r| {
        Ok(HopRecord {
            seq: r.get(0)?,
            message_id: r.get(1)?,
            node: r.get(2)?,
            from: r.get(3)?,
            to: r.get(4)?,
            status: r.get(5)?,
            decision: r.get(6)?,
            http_status: r.get(7)?,
            findings: r.get(8)?,
            session_id: r.get(9)?,
            delegation_chain_hash: r.get(10)?,
            delegation_root: r.get(11)?,
            delegation_depth: r.get(12)?,
            delegation_path: r.get(13)?,
        })
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("records")
}

/// Moves a rendered config onto other loopback addresses: the listener, the
/// `warrant_audit` cluster (the hop's sidecar) and the `demo_upstream`
/// cluster (the next hop). [`envoy::render`] set the ports already.
fn set_addresses(config: &Path, listener: &str, audit: &str, upstream: &str) {
    let text = std::fs::read_to_string(config).expect("read rendered config");
    let mut doc: Value = serde_yaml::from_str(&text).expect("rendered config is YAML");
    let resources = doc.get_mut("static_resources").expect("static_resources");
    for l in resources.get_mut("listeners").and_then(Value::as_sequence_mut).expect("listeners") {
        l["address"]["socket_address"]["address"] = listener.into();
    }
    for cluster in resources.get_mut("clusters").and_then(Value::as_sequence_mut).expect("clusters")
    {
        let address = match cluster.get("name").and_then(Value::as_str) {
            Some("warrant_audit") => audit,
            Some("demo_upstream") => upstream,
            _ => continue,
        };
        let endpoints = cluster["load_assignment"]["endpoints"]
            .as_sequence_mut()
            .expect("load_assignment.endpoints");
        for group in endpoints {
            for lb in group["lb_endpoints"].as_sequence_mut().expect("lb_endpoints") {
                lb["endpoint"]["address"]["socket_address"]["address"] = address.into();
            }
        }
    }
    std::fs::write(config, serde_yaml::to_string(&doc).expect("render")).expect("write config");
}
