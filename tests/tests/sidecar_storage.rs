//! The sidecar's storage failing under it: a full disk and a file system
//! turned read-only. Real ones: the database lives on a small tmpfs the
//! test mounts (so the test needs root, as CI has), filled with a junk file
//! or remounted read-only. In both cases the sidecar refuses the records
//! with a clear error, the filter treats that as a sidecar failure (503
//! `audit_unavailable` in `sync` mode, nothing forwarded), requests pass
//! again once the storage is back, and what was committed before is intact:
//! `verify` passes at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use warrant_e2e::agents::Agent;
use warrant_e2e::envoy::{self, Envoy, Ports};
use warrant_e2e::sidecar::{self, Sidecar};
use warrant_e2e::upstream::Upstream;
use warrant_e2e::wait;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path: path.to_path_buf() }
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Upstream, a sidecar whose database is `db`, and Envoy in `sync` mode.
struct World {
    envoy: Envoy,
    sidecar: Sidecar,
    upstream: Upstream,
    alice: Agent,
    _dir: tempfile::TempDir,
}

impl World {
    fn start(db: &Path) -> World {
        let dir = tempfile::Builder::new().prefix("warrant-storage-").tempdir().unwrap();
        let alice = Agent::new("alice");
        let upstream = Upstream::start();
        let sidecar = Sidecar::start(db, dir.path());
        let config = dir.path().join("envoy.yaml");
        let key = alice.public_base64();
        envoy::render(
            &warrant_e2e::repo_root().join("envoy/envoy.yaml"),
            &config,
            Ports { audit: sidecar.port, upstream: upstream.port() },
            &|json| {
                json["keys"] = serde_json::json!({ "alice": key });
                json["audit"]["mode"] = "sync".into();
            },
        );
        let envoy = Envoy::start(&config, dir.path(), 1);
        World { envoy, sidecar, upstream, alice, _dir: dir }
    }

    /// Sends one signed message; returns the status and the decision code
    /// ("" for a forwarded request).
    fn send(&self, n: usize) -> (u16, String) {
        let body = self.alice.envelope("bob", &format!("status report {n}: all systems nominal"));
        let url = format!("http://127.0.0.1:{}/v1/message", self.envoy.port);
        let reply = match ureq::post(&url)
            .set("content-type", "application/json")
            .send_string(&body.to_string())
        {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("request {n}: {e}"),
        };
        let status = reply.status();
        let text = reply.into_string().unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        (status, json["policy_decision"].as_str().unwrap_or("").to_string())
    }

    fn sidecar_log(&self) -> String {
        std::fs::read_to_string(&self.sidecar.log).unwrap_or_default()
    }
}

/// Sends requests until one is refused for want of evidence; returns how
/// many passed before it. Every answer is either a pass or that refusal.
fn send_until_refused(world: &World, from: usize, limit: usize) -> usize {
    for n in from..from + limit {
        match world.send(n) {
            (200, _) => continue,
            (503, decision) => {
                assert_eq!(decision, "audit_unavailable");
                return n - from;
            }
            other => panic!("request {n}: unexpected answer {other:?}"),
        }
    }
    panic!("{limit} requests passed: the storage never failed");
}

#[test]
fn full_disk_refuses_records_until_space_returns_and_keeps_what_was_committed() {
    let scratch = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&scratch.path().join("fs"), "4m");
    let db = fs.path.join("audit.db");
    let world = World::start(&db);
    for n in 0..20 {
        assert_eq!(world.send(n).0, 200);
    }

    // Fill what is left with a junk file, then keep sending.
    let junk = fs.path.join("junk");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=1000"])
        .arg(format!("of={}", junk.display()))
        .output()
        .unwrap();
    let seen_before = world.upstream.seen().len();
    let passed = send_until_refused(&world, 20, 5000);
    assert_eq!(world.upstream.seen().len(), seen_before + passed, "a refused request went on");
    wait::until(Duration::from_secs(10), "the sidecar's error", || {
        world.sidecar_log().contains("full").then_some(())
    });
    // Still full: still refused, and nothing forwarded.
    assert_eq!(world.send(9000), (503, "audit_unavailable".to_string()));

    // Space again: records are taken again.
    std::fs::remove_file(&junk).unwrap();
    wait::until(Duration::from_secs(10), "a request passing again", || {
        (world.send(9001).0 == 200).then_some(())
    });
    let mut world = world;
    world.sidecar.stop();
    let report = sidecar::verify(&db, &[]);
    assert_eq!(report.status.code(), Some(0), "{}", String::from_utf8_lossy(&report.stdout));
}

#[test]
fn read_only_database_is_refused_with_a_clear_error_and_nothing_goes_on_unrecorded() {
    let scratch = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&scratch.path().join("fs"), "16m");
    let db = fs.path.join("audit.db");
    let mut world = World::start(&db);
    for n in 0..20 {
        assert_eq!(world.send(n).0, 200);
    }
    let port = world.sidecar.port;
    world.sidecar.stop();

    // The file system turns read-only (a remount needs no file open for
    // writing, hence the stop). The sidecar refuses to serve it, saying why.
    fs.remount("ro");
    let out = Command::new(warrant_e2e::audit_bin())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not writable (read-only file system"), "{stderr}");
    // With no sidecar taking records, nothing goes on.
    let seen_before = world.upstream.seen().len();
    assert_eq!(world.send(20), (503, "audit_unavailable".to_string()));
    assert_eq!(world.upstream.seen().len(), seen_before);
    // Reading still works: the evidence can be checked where it is.
    let report = sidecar::verify(&db, &[]);
    assert_eq!(report.status.code(), Some(0), "{}", String::from_utf8_lossy(&report.stdout));

    // Writable again: the same chain goes on.
    fs.remount("rw");
    world.sidecar.restart();
    assert_eq!(world.send(21).0, 200);
    world.sidecar.stop();
    let report = sidecar::verify(&db, &[]);
    assert_eq!(report.status.code(), Some(0), "{}", String::from_utf8_lossy(&report.stdout));
    assert!(String::from_utf8_lossy(&report.stdout).contains("21 entries"), "{report:?}");
}
