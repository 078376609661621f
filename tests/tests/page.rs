//! The audit page in a real headless Chromium (Debian's `/usr/bin/chromium`,
//! installed by `scripts/setup`), and the sidecar's own surface: loopback
//! by default, a Unix socket Envoy reaches through a `pipe` cluster, a
//! read-only page, private files, a record size limit, and no secret in any
//! log.
//!
//! The browser loads the page the way a reviewer would; the tests read the
//! DOM Chromium built (`--dump-dom`) and the pixels it drew (`--screenshot`,
//! kept next to the evidence for a person to look at).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use warrant_e2e::agents::{now_secs, Agent};
use warrant_e2e::envoy::{self, Envoy, Ports};
use warrant_e2e::process::Guard;
use warrant_e2e::sidecar::Sidecar;
use warrant_e2e::stack::{Options, Stack};
use warrant_e2e::upstream::Upstream;
use warrant_e2e::wait;

const CHROMIUM: &str = "/usr/bin/chromium";

// ---------------------------------------------------------------- browser

/// Runs headless Chromium on `url` with `extra` arguments and a fresh
/// profile under `dir`. The flags keep it off every network but loopback
/// (no background, component or sync traffic) and let it run as root.
fn chromium(dir: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found\n\nhint: run scripts/setup (it installs Debian's chromium)"
    );
    let profile = tempfile::Builder::new().prefix("chromium-").tempdir_in(dir).expect("profile");
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        output.status.success(),
        "chromium failed on {url}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The DOM Chromium built from the page.
fn dump_dom(dir: &Path, url: &str) -> String {
    let dom = String::from_utf8(chromium(dir, url, &["--dump-dom"]).stdout).expect("UTF-8 DOM");
    assert!(dom.contains("<h1>Warrant audit chain</h1>"), "not the audit page:\n{dom}");
    dom
}

/// Saves a screenshot of the page to `png` and returns its pixels (RGBA).
fn screenshot(dir: &Path, url: &str, png: &Path) -> Vec<[u8; 4]> {
    chromium(dir, url, &["--window-size=1280,1000", &format!("--screenshot={}", png.display())]);
    let decoder = png::Decoder::new(std::fs::File::open(png).expect("screenshot written"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let bytes = &buf[..info.buffer_size()];
    match info.color_type {
        png::ColorType::Rgba => bytes.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
        png::ColorType::Rgb => bytes.chunks_exact(3).map(|p| [p[0], p[1], p[2], 255]).collect(),
        other => panic!("unexpected screenshot colour type {other:?}"),
    }
}

/// Pixels of exactly this colour.
fn count(pixels: &[[u8; 4]], rgb: u32) -> usize {
    let want = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8, 255];
    pixels.iter().filter(|p| **p == want).count()
}

/// The badge backgrounds of the page's stylesheet.
const GREEN_BG: u32 = 0xeafaf1;
const YELLOW_BG: u32 = 0xfff8e1;
const RED_BG: u32 = 0xfdecea;

/// Asserts the screenshot shows one badge colour over an area (a filled
/// badge, not a stray pixel) and none of the other two.
fn assert_badge_colour(pixels: &[[u8; 4]], shown: u32, png: &Path) {
    for colour in [GREEN_BG, YELLOW_BG, RED_BG] {
        let n = count(pixels, colour);
        if colour == shown {
            assert!(n > 10_000, "badge colour #{colour:06x}: {n} pixels in {}", png.display());
        } else {
            assert_eq!(n, 0, "#{colour:06x} must not be drawn in {}", png.display());
        }
    }
}

// ---------------------------------------------------------------- the DOM

/// The badge: its `data-state` and its text.
fn badge(dom: &str) -> (String, String) {
    let start = dom.find("id=\"chain-status\"").expect("the badge element");
    let tag_end = start + dom[start..].find('>').expect("tag end");
    let tag = &dom[start..tag_end];
    let state = tag
        .split("data-state=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("data-state")
        .to_string();
    let end = tag_end + dom[tag_end..].find("</div>").expect("badge end");
    (state, text(&dom[tag_end + 1..end]))
}

/// Text of an HTML fragment: tags dropped, the five entities decoded.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// The data rows of `<table id="ID">` as cell texts (the header row, of
/// `<th>` cells, is left out).
fn table(dom: &str, id: &str) -> Vec<Vec<String>> {
    let start = dom.find(&format!("<table id=\"{id}\">")).unwrap_or_else(|| panic!("table {id}"));
    let end = start + dom[start..].find("</table>").expect("table end");
    dom[start..end]
        .split("<tr")
        .skip(1)
        .filter(|row| row.contains("<td>"))
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|cell| text(cell.split("</td>").next().unwrap()))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------- helpers

/// `warrant-audit page --db DB [extra...]`, serving until dropped.
struct PageServer {
    _process: Guard,
    url: String,
}

impl PageServer {
    fn start(db: &Path, extra: &[&str]) -> PageServer {
        let mut child = Command::new(warrant_e2e::audit_bin())
            .args(["page", "--db"])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn warrant-audit page");
        let stdout = child.stdout.take().expect("stdout");
        let process = Guard::new("warrant-audit page", child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("warrant-audit: listening http=") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(30)).expect("page reports its address");
        PageServer { _process: process, url: format!("http://{addr}") }
    }
}

/// GET `url` as JSON.
fn get_json(url: &str) -> serde_json::Value {
    let body = ureq::get(url).call().expect("GET").into_string().expect("body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"))
}

/// The fingerprint of the public key file next to a database.
fn fingerprint_of(public: &Path) -> String {
    let key = warrant_delegation::keys::parse_public_key(&std::fs::read_to_string(public).unwrap())
        .unwrap();
    warrant_delegation::keys::fingerprint(&key)
}

/// Copies a stopped sidecar's database (WAL checkpointed into the file on
/// stop) into `dir`, without its key files.
fn copy_db(db: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join("audit.db");
    std::fs::copy(db, &copy).unwrap();
    copy
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

// ---------------------------------------------------------------- the page

#[test]
fn page_in_a_real_browser_shows_green_yellow_and_red() {
    let stack = Stack::start(Options::default());
    let shots = stack.dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // Four decisions through the real path, and one recipient name that
    // is HTML: the page must show it as text.
    let delivered = stack.alice.envelope("bob", "Please summarize the quarterly report");
    assert_eq!(stack.post_json("/v1/message", &[], &delivered).status, 200);
    let flagged = stack.alice.envelope("bob", "capsh --print | grep Current");
    assert_eq!(stack.post_json("/v1/message", &[], &flagged).status, 200);
    let held =
        stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "insmod /tmp/rootkit.ko"));
    assert_eq!(held.status, 202, "{}", held.body);
    let held_id = held.json()["message_id"].as_str().unwrap().to_string();
    let hostile = "<img src=x onerror=alert(1)>";
    let blocked = stack.post_json(
        "/v1/message",
        &[],
        &stack.alice.envelope(hostile, "echo /cmd > /sys/fs/cgroup/memory/release_agent"),
    );
    assert_eq!(blocked.status, 403, "{}", blocked.body);
    let session = stack.records()[0].session_id.clone();
    assert!(!session.is_empty());

    // Green: the serving sidecar verifies with its own key once a
    // checkpoint covers all four entries.
    let page = stack.sidecar.page_url();
    let report = wait::until(Duration::from_secs(20), "a checkpoint over all entries", || {
        let report = get_json(&format!("{page}/api/verify"));
        (report["entries"] == 4
            && report["unsigned_entries"] == 0
            && report["signature_check"] == "valid")
            .then_some(report)
    });
    let fingerprint = fingerprint_of(&stack.dir.join("warrant-audit.pub"));
    assert_eq!(report["key_fingerprint"], fingerprint.as_str());

    let dom = dump_dom(&stack.dir, &page);
    let (state, words) = badge(&dom);
    assert_eq!(state, "green", "{words}");
    assert!(words.contains("Chain + signatures: verified"), "{words}");
    assert!(words.contains(&fingerprint), "the badge names the key: {words}");
    assert!(words.contains("4 entries"), "{words}");

    let records = table(&dom, "records");
    let decisions: Vec<&str> = records.iter().map(|r| r[6].as_str()).collect();
    assert_eq!(
        decisions,
        ["content_blocked", "content_quarantined", "content_flagged", "allow"],
        "newest first: {records:?}"
    );
    assert_eq!(records[3][0], "1");
    assert!(records.iter().all(|r| r[2] == "alice"), "{records:?}");
    assert_eq!(records[3][4], "POST /v1/message");
    assert_eq!(records[0][3], hostile, "the HTML name is shown as text");
    assert!(!dom.contains("<img"), "the recipient name became an element:\n{dom}");

    let sessions = table(&dom, "sessions");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0][0], session);
    assert_eq!(sessions[0][3], "4", "records in the session");
    assert_eq!(sessions[0][4], "alice");
    assert_eq!((sessions[0][5].as_str(), sessions[0][6].as_str()), ("1", "1"), "blocks, holds");

    let queue = table(&dom, "quarantine");
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0][0], "3");
    assert_eq!(queue[0][1], held_id);
    assert_eq!((queue[0][2].as_str(), queue[0][3].as_str()), ("alice", "bob"));
    assert_eq!(queue[0][5], "pending");

    let png = shots.join("green.png");
    assert_badge_colour(&screenshot(&stack.dir, &page, &png), GREEN_BG, &png);

    // Yellow: a copy of the database without its key: intact, but the
    // signatures cannot be checked.
    let evidence = stack.stop();
    let public = evidence.dir.join("warrant-audit.pub");
    let copy = copy_db(&evidence.db(), &evidence.dir.join("copy"));
    let server = PageServer::start(&copy, &[]);
    let (state, words) = badge(&dump_dom(&evidence.dir, &server.url));
    assert_eq!(state, "yellow", "{words}");
    assert!(words.contains("Chain: intact") && words.contains("not verified (no key)"), "{words}");
    let png = shots.join("yellow.png");
    assert_badge_colour(&screenshot(&evidence.dir, &server.url, &png), YELLOW_BG, &png);
    drop(server);

    // Red: one stored byte of the first record edited in the file (a hex
    // digit of its body hash, stored only in its row).
    let body_hash = hex::encode(Sha256::digest(delivered.to_string().as_bytes()));
    let mut bytes = std::fs::read(&copy).unwrap();
    let at: Vec<usize> = bytes
        .windows(body_hash.len())
        .enumerate()
        .filter(|(_, w)| *w == body_hash.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the body hash is stored once in the file");
    bytes[at[0]] = if bytes[at[0]] == b'0' { b'1' } else { b'0' };
    std::fs::write(&copy, &bytes).unwrap();

    let key_arg = public.display().to_string();
    let server = PageServer::start(&copy, &["--key", &key_arg]);
    let dom = dump_dom(&evidence.dir, &server.url);
    let (state, words) = badge(&dom);
    assert_eq!(state, "red", "{words}");
    assert!(words.contains("BROKEN at seq 1"), "{words}");
    assert!(words.contains("position 1 of 4"), "{words}");
    assert!(words.contains("entry hash mismatch"), "the reason: {words}");
    assert_eq!(table(&dom, "records").len(), 4, "the records are still shown");
    assert!(dom.contains("<tr class=\"broken\""), "the broken row is marked");
    let marked = dom.split("<tr class=\"broken\"").nth(1).unwrap();
    assert!(marked.split("</tr>").next().unwrap().contains("<td>1</td>"), "row of seq 1");
    let png = shots.join("red.png");
    assert_badge_colour(&screenshot(&evidence.dir, &server.url, &png), RED_BG, &png);
    eprintln!("screenshots in {}", shots.display());
    if let Ok(keep) = std::env::var("WARRANT_KEEP_SCREENSHOTS") {
        for name in ["green.png", "yellow.png", "red.png"] {
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::copy(shots.join(name), Path::new(&keep).join(name)).unwrap();
        }
    }
}

#[test]
fn page_and_metrics_are_read_only() {
    let stack = Stack::start(Options::default());
    let reply = stack.post_json("/v1/message", &[], &stack.alice.envelope("bob", "hello"));
    assert_eq!(reply.status, 200);
    let evidence = stack.stop();
    let copy = copy_db(&evidence.db(), &evidence.dir.join("copy"));
    let before = std::fs::read(&copy).unwrap();
    let server = PageServer::start(&copy, &[]);

    for path in ["/", "/api/verify", "/metrics"] {
        let url = format!("{}{path}", server.url);
        let ok = ureq::get(&url).call().unwrap();
        assert_eq!(ok.status(), 200, "GET {path}");
        for (name, value) in warrant_audit::page::SECURITY_HEADERS {
            assert_eq!(ok.header(name), Some(value), "GET {path}: {name}");
        }
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let status = match ureq::request(method, &url).send_string("x") {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert_eq!(status, 405, "{method} {path} must be refused");
        }
    }
    drop(server);
    assert_eq!(std::fs::read(&copy).unwrap(), before, "the page never changes the database");
    let names: Vec<_> = std::fs::read_dir(copy.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with("-journal")), "{names:?}");
}

// ------------------------------------------------------- the sidecar surface

#[test]
fn grpc_and_page_listen_on_loopback_by_default() {
    let help = Command::new(warrant_e2e::audit_bin()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("[default: 127.0.0.1:50051]"), "{help}");
    assert!(help.contains("[default: 127.0.0.1:0]"), "{help}");
    let dir = tempfile::tempdir().unwrap();
    // The default --http-listen, and a free port instead of 50051 (which
    // another run may hold).
    let sidecar =
        Sidecar::start_with(&dir.path().join("audit.db"), dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(sidecar.grpc.starts_with("127.0.0.1:"), "{}", sidecar.grpc);
    assert!(ureq::get(&sidecar.page_url()).call().is_ok(), "the page is on 127.0.0.1");
}

#[test]
fn database_and_key_files_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut sidecar = Sidecar::start_with(&db, dir.path(), &["--listen", "127.0.0.1:0"]);
    let record = warrant_wire::AuditRecord {
        message_id: "m-1".into(),
        from: "alice".into(),
        ..Default::default()
    };
    let ack = append(&sidecar, record).expect("a small record is stored");
    assert_eq!(ack.seq, 1);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    for path in [&db, &wal, &shm, &dir.path().join("warrant-audit.key")] {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }
    assert_eq!(mode(&dir.path().join("warrant-audit.pub")), 0o644);
    sidecar.stop();
    assert_eq!(mode(&db), 0o600);
}

/// One Append over real gRPC (tonic) to a sidecar's TCP port.
fn append(
    sidecar: &Sidecar,
    record: warrant_wire::AuditRecord,
) -> Result<warrant_wire::AppendAck, tonic::Status> {
    grpc(sidecar, |mut client| async move {
        client.append(record).await.map(tonic::Response::into_inner)
    })
}

/// One AppendBatch over real gRPC to a sidecar's TCP port.
fn append_batch(
    sidecar: &Sidecar,
    records: Vec<warrant_wire::AuditRecord>,
) -> Result<Vec<warrant_wire::AppendAck>, tonic::Status> {
    grpc(sidecar, |mut client| async move {
        let batch = warrant_wire::AuditBatch { records };
        client.append_batch(batch).await.map(|r| r.into_inner().acks)
    })
}

/// A record with `id` carrying about `size` bytes (in a note).
fn record(id: &str, size: usize) -> warrant_wire::AuditRecord {
    warrant_wire::AuditRecord {
        message_id: id.into(),
        notes: vec!["n".repeat(size)],
        ..Default::default()
    }
}

type Client =
    warrant_audit::proto::audit_service_client::AuditServiceClient<tonic::transport::Channel>;

/// Runs `call` with a tonic client connected to the sidecar.
fn grpc<T, F: std::future::Future<Output = T>>(
    sidecar: &Sidecar,
    call: impl FnOnce(Client) -> F,
) -> T {
    let url = format!("http://127.0.0.1:{}", sidecar.port);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let client = Client::connect(url)
            .await
            .expect("connect")
            // The client may send anything; the sidecar is what limits.
            .max_encoding_message_size(usize::MAX);
        call(client).await
    })
}

#[test]
fn grpc_batches_are_stored_in_order_and_acknowledged_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let sidecar = Sidecar::start_with(
        &db,
        dir.path(),
        &["--listen", "127.0.0.1:0", "--max-record-bytes", "4096"],
    );
    assert_eq!(append(&sidecar, record("a", 10)).unwrap().seq, 1);
    let acks = append_batch(&sidecar, vec![record("b", 10), record("a", 10), record("c", 10)])
        .expect("a batch of small records is stored");
    let seqs: Vec<(u64, bool)> = acks.iter().map(|a| (a.seq, a.duplicate)).collect();
    assert_eq!(seqs, [(2, false), (1, true), (3, false)], "in order; the retransmission answered");
    assert!(acks.iter().all(|a| a.entry_hash.len() == 64), "{acks:?}");
    assert!(append_batch(&sidecar, Vec::new()).unwrap().is_empty());

    // One bad record refuses the whole batch, naming it; nothing of it is
    // stored.
    let refused = append_batch(&sidecar, vec![record("d", 10), record("big", 8192)]).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("record 1 of the batch"), "{refused:?}");
    assert!(refused.message().contains("4096"), "{refused:?}");
    let refused = append_batch(&sidecar, vec![record("", 10)]).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    // A batch holds more than one record's limit.
    let many: Vec<_> = (0..40).map(|i| record(&format!("m{i}"), 3000)).collect();
    assert_eq!(append_batch(&sidecar, many).unwrap().last().unwrap().seq, 43);
    drop(sidecar);
    let stored: Vec<String> =
        warrant_e2e::stack::records(&db).into_iter().map(|r| r.message_id).collect();
    assert_eq!(stored.len(), 43);
    assert_eq!(stored[..3], ["a", "b", "c"]);
    assert!(!stored.iter().any(|id| id == "d" || id == "big"), "{stored:?}");
}

#[test]
fn grpc_records_over_the_size_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The default limit: 1 MiB.
    let default =
        Sidecar::start_with(&dir.path().join("a.db"), dir.path(), &["--listen", "127.0.0.1:0"]);
    let refused = append(&default, record("big", 1024 * 1024 + 1)).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert_eq!(append(&default, record("fits", 1000 * 1024)).unwrap().seq, 1);

    // A lower limit.
    let strict = Sidecar::start_with(
        &dir.path().join("b.db"),
        dir.path(),
        &["--listen", "127.0.0.1:0", "--max-record-bytes", "4096"],
    );
    let refused = append(&strict, record("big", 8192)).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    assert!(refused.message().contains("4096"), "{refused:?}");
    assert_eq!(append(&strict, record("small", 2048)).unwrap().seq, 1);
    drop((default, strict));
    for db in ["a.db", "b.db"] {
        let stored = warrant_e2e::stack::records(&dir.path().join(db));
        assert_eq!(stored.len(), 1, "{db}: only the record within the limit: {stored:?}");
    }
    let bad = Command::new(warrant_e2e::audit_bin())
        .args(["serve", "--max-record-bytes", "10"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--max-record-bytes"));
}

/// Upstream, a sidecar started with `sidecar_args`, and Envoy with the
/// filter, from `envoy/envoy.yaml`; `cluster` rewrites the rendered
/// `warrant_audit` cluster.
struct Parts {
    envoy: Envoy,
    sidecar: Sidecar,
    _upstream: Upstream,
    alice: Agent,
    human: Agent,
    dir: tempfile::TempDir,
}

fn start_parts(
    sidecar_args: &[&str],
    cluster: &dyn Fn(&mut serde_yaml::Value, &Sidecar),
    envoy_log_components: &str,
) -> Parts {
    let dir = tempfile::Builder::new().prefix("warrant-e2e-").tempdir().unwrap();
    let alice = Agent::new("alice");
    let bob = Agent::new("bob");
    let human = Agent::new("human");
    let upstream = Upstream::start();
    let sidecar = Sidecar::start_with(&dir.path().join("audit.db"), dir.path(), sidecar_args);
    let config = dir.path().join("envoy.yaml");
    let keys = serde_json::json!({
        "alice": alice.public_base64(), "bob": bob.public_base64(), "human": human.public_base64(),
    });
    envoy::render(
        &warrant_e2e::repo_root().join("envoy/envoy.yaml"),
        &config,
        Ports { audit: sidecar.port.max(1), upstream: upstream.port() },
        &|json| json["keys"] = keys.clone(),
    );
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let clusters = doc["static_resources"]["clusters"].as_sequence_mut().unwrap();
    let audit = clusters.iter_mut().find(|c| c["name"] == "warrant_audit").unwrap();
    cluster(audit, &sidecar);
    std::fs::write(&config, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let envoy = Envoy::start_logging(&config, dir.path(), 2, envoy_log_components);
    Parts { envoy, sidecar, _upstream: upstream, alice, human, dir }
}

fn post(envoy: &Envoy, headers: &[(&str, &str)], body: &serde_json::Value) -> (u16, String) {
    let mut request = ureq::post(&format!("http://127.0.0.1:{}/v1/message", envoy.port))
        .timeout(Duration::from_secs(20))
        .set("content-type", "application/json");
    for (name, value) in headers {
        request = request.set(name, value);
    }
    match request.send_string(&body.to_string()) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("request failed: {e}"),
    }
}

#[test]
fn envoy_reaches_the_sidecar_over_a_unix_socket() {
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("audit.sock");
    let listen = format!("unix:{}", socket.display());
    let parts = start_parts(
        &["--listen", &listen],
        &|cluster, sidecar| {
            let path = sidecar.grpc.strip_prefix("unix:").expect("a unix address").to_string();
            let endpoint: serde_yaml::Value =
                serde_yaml::from_str(&format!("{{ address: {{ pipe: {{ path: \"{path}\" }} }} }}"))
                    .unwrap();
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] = endpoint;
        },
        "wasm:info",
    );
    assert_eq!(parts.sidecar.grpc, listen);
    assert_eq!(mode(&socket), 0o660, "only the sidecar's user and group may connect");
    let rendered = std::fs::read_to_string(parts.dir.path().join("envoy.yaml")).unwrap();
    assert!(rendered.contains("pipe:"), "{rendered}");

    let (status, body) = post(&parts.envoy, &[], &parts.alice.envelope("bob", "over a socket"));
    assert_eq!(status, 200, "{body}");
    let records = warrant_e2e::stack::records(&parts.sidecar.db);
    assert_eq!(records.len(), 1, "the record went over the socket: {records:?}");
    assert_eq!((records[0].from.as_str(), records[0].decision.as_str()), ("alice", "allow"));

    let Parts { mut envoy, mut sidecar, dir, .. } = parts;
    envoy.process.stop(Duration::from_secs(10));
    sidecar.stop();
    assert!(!socket.exists(), "the socket is removed on stop");
    let verified = warrant_e2e::sidecar::verify(&dir.path().join("audit.db"), &[]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stdout));
}

#[test]
fn a_unix_socket_in_use_or_a_regular_file_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("audit.sock");
    let listen = format!("unix:{}", socket.display());
    let _first = Sidecar::start_with(&dir.path().join("a.db"), dir.path(), &["--listen", &listen]);
    let second = Command::new(warrant_e2e::audit_bin())
        .args(["serve", "--http-listen", "127.0.0.1:0", "--listen", &listen, "--db"])
        .arg(dir.path().join("b.db"))
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another process is listening"));

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let third = Command::new(warrant_e2e::audit_bin())
        .args(["serve", "--listen", &format!("unix:{}", file.display()), "--db"])
        .arg(dir.path().join("c.db"))
        .output()
        .unwrap();
    assert_eq!(third.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&third.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn no_key_or_raw_delegation_header_in_any_log() {
    let parts = start_parts(&["--listen", "127.0.0.1:0", "--debug"], &|_, _| {}, "wasm:debug");
    let chain = warrant_delegation::encode_header(&[warrant_delegation::mint(
        &parts.human.key,
        &warrant_delegation::MintRequest {
            delegator: "human",
            delegate: "alice",
            scope: vec!["bob".into()],
            tools: vec![],
            ttl: Duration::from_secs(3600),
            max_depth: 3,
            parent: None,
        },
        warrant_delegation::Timestamp::from_unix_secs(now_secs()),
    )
    .unwrap()]);
    let content = format!("quarterly figures {}", hex::encode(parts.human.key.verifying_key()));
    let (status, body) = post(
        &parts.envoy,
        &[("x-oktsec-delegation", &chain)],
        &parts.alice.envelope("bob", &content),
    );
    assert_eq!(status, 200, "{body}");
    let records = warrant_e2e::stack::records(&parts.sidecar.db);
    assert_eq!(records[0].delegation_root, "human", "the chain was verified: {records:?}");
    // A rejected chain (tampered) takes the other log paths.
    let mut forged = chain.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let (status, _) = post(
        &parts.envoy,
        &[("x-oktsec-delegation", &forged)],
        &parts.alice.envelope("bob", "forged hello"),
    );
    assert_ne!(status, 200);

    let key_pem = std::fs::read_to_string(parts.dir.path().join("warrant-audit.key")).unwrap();
    let sidecar_key = warrant_delegation::keys::parse_private_key(&key_pem).unwrap();
    let secrets: Vec<(&str, String)> = vec![
        ("the delegation header", chain.clone()),
        (
            "the middle of the delegation header",
            chain[chain.len() / 3..chain.len() / 3 + 40].into(),
        ),
        ("the forged header", forged.clone()),
        ("the request's content", content.clone()),
        ("the sidecar key's PEM body", key_pem.lines().nth(1).unwrap().to_string()),
        ("the sidecar key's seed", STANDARD.encode(sidecar_key.to_bytes())),
        ("the sidecar key's seed (hex)", hex::encode(sidecar_key.to_bytes())),
        ("alice's seed", STANDARD.encode(parts.alice.key.to_bytes())),
        ("the human's seed", STANDARD.encode(parts.human.key.to_bytes())),
    ];
    // Stop both, so every line is flushed, then read the logs.
    let Parts { mut envoy, mut sidecar, dir, .. } = parts;
    envoy.process.stop(Duration::from_secs(10));
    sidecar.stop();
    let sidecar_log = std::fs::read_to_string(dir.path().join("sidecar.log")).unwrap();
    let envoy_log = std::fs::read_to_string(dir.path().join("envoy.log")).unwrap();
    assert!(sidecar_log.contains("DEBUG"), "the sidecar logged at debug level:\n{sidecar_log}");
    assert!(envoy_log.contains("wasm"), "the filter logged:\n{envoy_log}");
    for (name, log) in [("sidecar", &sidecar_log), ("envoy", &envoy_log)] {
        for (what, secret) in &secrets {
            assert!(!log.contains(secret.as_str()), "{what} is in the {name} log:\n{log}");
        }
    }
}
