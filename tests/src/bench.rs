//! Pieces of the performance harness (`warrant-bench`, run by
//! `scripts/bench`): a fast upstream, a blocking HTTP/1.1 client, a
//! fixed-rate open-loop driver, the `wrk` runner for saturation, the request
//! bodies (MCP `tools/call` and signed envelopes with a 2-hop delegation
//! chain), and the small statistics the report needs.
//!
//! Main types: [`FastUpstream`] (answers 200 and forgets the body, unlike the
//! recording [`crate::upstream::Upstream`], so it is never the bottleneck),
//! [`BenchStack`] (one Envoy, with or without the filter, its sidecar and
//! upstream), [`Client`], [`OpenLoop`], [`Saturation`], [`Traffic`].
//!
//! Everything binds loopback only; every loop is bounded in count and time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_yaml::Value;
use warrant_delegation::{encode_header, mint, MintRequest, Timestamp, Token};

use crate::agents::{now_secs, Agent};
use crate::envoy::{self, Envoy, Ports};
use crate::sidecar::Sidecar;

/// Most connections the fast upstream serves at once.
const UPSTREAM_MAX_CONNECTIONS: usize = 512;
/// Largest request head either side reads.
const MAX_HEAD: usize = 256 * 1024;
/// Socket timeout for the client and the upstream.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Upstream

/// An HTTP/1.1 upstream on 127.0.0.1 that reads each request fully, forgets
/// it, and answers `200 {"upstream":"ok"}` (keep-alive). One thread per
/// connection, at most [`UPSTREAM_MAX_CONNECTIONS`].
pub struct FastUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FastUpstream {
    /// Starts it on a free loopback port.
    pub fn start() -> FastUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("local addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let stop2 = stop.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if active.load(Ordering::SeqCst) >= UPSTREAM_MAX_CONNECTIONS {
                    continue; // dropped: closes the connection
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (active, stop) = (active.clone(), stop2.clone());
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, stop);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FastUpstream { port, stop, accept: Some(accept) }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for FastUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

const UPSTREAM_REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
content-length: 18\r\n\r\n{\"upstream\":\"ok\"}\n";

fn serve_connection(stream: TcpStream, stop: Arc<AtomicBool>) -> io::Result<()> {
    // A short read timeout lets a waiting read notice the stop flag.
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut wire = Wire::new(stream);
    wire.stop = Some(stop);
    while let Some(head) = wire.read_head()? {
        wire.discard_body(&head)?;
        writer.write_all(UPSTREAM_REPLY)?;
    }
    Ok(())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

// ---------------------------------------------------------------------------
// HTTP/1.1 framing, both sides

/// A buffered reader of HTTP/1.1 messages.
struct Wire<S: Read> {
    inner: S,
    /// When set, read timeouts are retried until the flag is raised.
    stop: Option<Arc<AtomicBool>>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

/// A parsed message head: the first line's status (responses) and the
/// framing headers.
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

impl<S: Read> Wire<S> {
    fn new(inner: S) -> Wire<S> {
        Wire { inner, stop: None, buf: vec![0; 64 * 1024], pos: 0, len: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos == self.len
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        }
        if self.len == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            } else {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        loop {
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(n) => {
                    self.len += n;
                    return Ok(n);
                }
                Err(e) if is_timeout(&e) => match &self.stop {
                    Some(stop) if !stop.load(Ordering::SeqCst) => continue,
                    _ => return Err(e),
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one head; `None` on a clean end of stream before any byte.
    fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            let window = &self.buf[self.pos..self.len];
            if let Some(end) = find(window, b"\r\n\r\n") {
                let head = parse_head(&window[..end]);
                self.pos += end + 4;
                return head.map(Some);
            }
            if self.len - self.pos > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            if self.fill()? == 0 {
                return if self.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    fn discard(&mut self, mut n: usize) -> io::Result<()> {
        while n > 0 {
            if self.is_empty() && self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = n.min(self.len - self.pos);
            self.pos += take;
            n -= take;
        }
        Ok(())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf[self.pos..self.len], b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + end]).to_string();
                self.pos += end + 2;
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads and forgets the body that `head` announces.
    fn discard_body(&mut self, head: &Head) -> io::Result<()> {
        if head.chunked {
            loop {
                let line = self.line()?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
                if size == 0 {
                    // Trailers end with an empty line.
                    while !self.line()?.is_empty() {}
                    return Ok(());
                }
                self.discard(size + 2)?;
            }
        }
        self.discard(head.content_length.unwrap_or(0))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(bytes: &[u8]) -> io::Result<Head> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let status = if first.starts_with("HTTP/") {
        first.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    } else {
        0
    };
    let mut head = Head { status, content_length: None, chunked: false, close: false };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => {
                head.content_length =
                    Some(value.parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "content-length")
                    })?);
            }
            "transfer-encoding" => head.chunked = value.contains("chunked"),
            "connection" => head.close = value.contains("close"),
            _ => {}
        }
    }
    Ok(head)
}

/// A keep-alive HTTP/1.1 client for prebuilt requests.
pub struct Client {
    port: u16,
    conn: Option<(TcpStream, Wire<TcpStream>)>,
}

impl Client {
    /// A client of 127.0.0.1:`port` (connects on first use).
    pub fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    /// Sends one raw request and reads the whole response; returns its
    /// status. Any error drops the connection (the next call reconnects).
    pub fn send(&mut self, request: &[u8]) -> io::Result<u16> {
        let result = self.try_send(request);
        match &result {
            Ok(_) => {}
            Err(_) => self.close(),
        }
        result
    }

    fn try_send(&mut self, request: &[u8]) -> io::Result<u16> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            let reader = stream.try_clone()?;
            self.conn = Some((stream, Wire::new(reader)));
        }
        let (stream, wire) = self.conn.as_mut().expect("connected above");
        stream.write_all(request)?;
        let head = wire.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        wire.discard_body(&head)?;
        if head.close {
            self.close();
        }
        Ok(head.status)
    }

    /// Sends one raw request on a fresh connection and returns the status
    /// and body text (for diagnosing an unexpected answer).
    pub fn send_verbose(port: u16, request: &[u8]) -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(request)?;
        let mut wire = Wire::new(stream.try_clone()?);
        let head = wire.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let length = head.content_length.unwrap_or(0).min(64 * 1024);
        let mut body = Vec::with_capacity(length);
        while body.len() < length {
            if wire.is_empty() && wire.fill()? == 0 {
                break;
            }
            let take = (length - body.len()).min(wire.len - wire.pos);
            body.extend_from_slice(&wire.buf[wire.pos..wire.pos + take]);
            wire.pos += take;
        }
        Ok((head.status, String::from_utf8_lossy(&body).to_string()))
    }

    fn close(&mut self) {
        if let Some((stream, _)) = self.conn.take() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

// ---------------------------------------------------------------------------
// Load: fixed-rate open loop and wrk saturation

/// What a fixed-rate open-loop run saw.
#[derive(Debug, Clone, Default)]
pub struct OpenLoop {
    /// Latency of each answered request, in microseconds, measured from the
    /// time it was *scheduled* (so a stalled server cannot hide its queue).
    pub latencies_us: Vec<u64>,
    /// For each entry of `latencies_us`, the index in `requests` of the
    /// request it measured.
    pub requests: Vec<usize>,
    /// Requests answered with a status other than 200.
    pub non_200: u64,
    /// Requests that failed at the socket (connect, read, write, timeout).
    pub errors: u64,
    /// Requests never sent because the run's deadline passed.
    pub dropped: u64,
}

impl OpenLoop {
    /// The `q`-quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.quantile_ms_of(q, |_| true)
    }

    /// The `q`-quantile of the latencies of the requests whose index
    /// satisfies `which`, in milliseconds.
    pub fn quantile_ms_of(&self, q: f64, which: impl Fn(usize) -> bool) -> f64 {
        quantile(&self.sorted_of(which), q) / 1000.0
    }

    /// The mean of the latencies of the requests whose index satisfies
    /// `which`, between their 10th and 90th percentiles, in milliseconds.
    pub fn trimmed_mean_ms_of(&self, which: impl Fn(usize) -> bool) -> f64 {
        trimmed_mean(&self.sorted_of(which)) / 1000.0
    }

    /// The latencies of the requests whose index satisfies `which`, sorted.
    fn sorted_of(&self, which: impl Fn(usize) -> bool) -> Vec<u64> {
        let mut sorted: Vec<u64> = self
            .latencies_us
            .iter()
            .zip(&self.requests)
            .filter(|(_, i)| which(**i))
            .map(|(l, _)| *l)
            .collect();
        sorted.sort_unstable();
        sorted
    }

    /// How many answered requests satisfy `which`.
    pub fn count_of(&self, which: impl Fn(usize) -> bool) -> usize {
        self.requests.iter().filter(|i| which(**i)).count()
    }
}

/// Sends `requests` (round-robin) at `rate` per second for `duration`, over
/// `connections` keep-alive connections: connection `j` owns the slots
/// `j, j + connections, ...`, each scheduled at `slot / rate`. Stops at
/// `duration` plus 15 s whatever happens.
pub fn open_loop(
    port: u16,
    requests: &[Arc<Vec<u8>>],
    rate: f64,
    duration: Duration,
    connections: usize,
) -> OpenLoop {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as usize;
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration + Duration::from_secs(15);
    let threads: Vec<_> = (0..connections)
        .map(|j| {
            let requests = requests.to_vec();
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let mut out = OpenLoop::default();
                let mut slot = j;
                while slot < total {
                    let scheduled = start + Duration::from_secs_f64(slot as f64 / rate);
                    let now = Instant::now();
                    if now > deadline {
                        out.dropped += ((total - slot) / connections) as u64 + 1;
                        break;
                    }
                    if scheduled > now {
                        std::thread::sleep(scheduled - now);
                    }
                    let index = slot % requests.len();
                    match client.send(&requests[index]) {
                        Ok(200) => {
                            out.latencies_us.push(scheduled.elapsed().as_micros() as u64);
                            out.requests.push(index);
                        }
                        Ok(_) => out.non_200 += 1,
                        Err(_) => out.errors += 1,
                    }
                    slot += connections;
                }
                out
            })
        })
        .collect();
    let mut all = OpenLoop::default();
    for thread in threads {
        let part = thread.join().expect("open-loop thread");
        all.latencies_us.extend(part.latencies_us);
        all.requests.extend(part.requests);
        all.non_200 += part.non_200;
        all.errors += part.errors;
        all.dropped += part.dropped;
    }
    all
}

/// What a `wrk` saturation run saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Saturation {
    /// Completed requests per second.
    pub rps: f64,
    /// Completed requests.
    pub requests: u64,
    /// Non-2xx/3xx responses.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
}

/// Runs `wrk -t1 -c<connections> -d<duration>` against 127.0.0.1:`port`,
/// sending the raw request in `request_file` (a Lua script in `dir` reads it).
pub fn wrk(
    port: u16,
    request_file: &Path,
    dir: &Path,
    duration: Duration,
    connections: u32,
) -> Result<Saturation, String> {
    wrk_cycling(port, &[request_file], dir, duration, connections)
}

/// [`wrk`] sending the raw requests of `request_files` in turn: request `i`
/// of the run (over all connections) is file `i mod n`.
pub fn wrk_cycling(
    port: u16,
    request_files: &[&Path],
    dir: &Path,
    duration: Duration,
    connections: u32,
) -> Result<Saturation, String> {
    let script = dir.join("bench.lua");
    let paths: Vec<String> =
        request_files.iter().map(|f| format!("{:?}", f.display().to_string())).collect();
    let lua = format!(
        r#"local reqs = {{}}
for i, path in ipairs({{{paths}}}) do
  local f = assert(io.open(path, "rb"))
  reqs[i] = f:read("*a")
  f:close()
end
local n = 0
request = function()
  n = n + 1
  return reqs[(n - 1) % #reqs + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK_RESULT %d %d %d %d\n", summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout))
end
"#,
        paths = paths.join(", ")
    );
    std::fs::write(&script, lua).map_err(|e| format!("write {}: {e}", script.display()))?;
    let secs = duration.as_secs().max(1);
    let output = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s"), "--timeout", "10s"])
        .arg("-s")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("WRK_RESULT ")).ok_or_else(|| {
        format!("wrk printed no result: {stdout}{}", String::from_utf8_lossy(&output.stderr))
    })?;
    let n: Vec<u64> = line.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    let [requests, micros, non_2xx, errors] = n[..] else {
        return Err(format!("unexpected wrk result line {line:?}"));
    };
    let rps = if micros == 0 { 0.0 } else { requests as f64 * 1e6 / micros as f64 };
    Ok(Saturation { rps, requests, non_2xx, errors })
}

// ---------------------------------------------------------------------------
// Stacks

/// Which Envoy configuration a stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setup {
    /// `envoy/envoy.yaml` with the wasm HTTP filter removed.
    Baseline,
    /// The filter with `audit.mode = sync` (the default; also what a
    /// filter built before `audit.mode` existed does).
    Sync,
    /// The filter with `audit.mode = async`.
    Async,
    /// `audit.mode = sync` with the sidecar's commits not fsynced
    /// (`serve --synchronous normal`).
    SyncNormal,
    /// `envoy/envoy.yaml` with the floor filter (`tests/floor-filter`) in
    /// Warrant's place: the same per-request host calls, none of the work.
    Floor,
}

impl Setup {
    /// Whether Warrant's filter runs in it (not the baseline or the floor).
    pub fn runs_warrant(self) -> bool {
        !matches!(self, Setup::Baseline | Setup::Floor)
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Baseline => "baseline (no filter)",
            Setup::Sync => "Warrant, audit sync",
            Setup::Async => "Warrant, audit async",
            Setup::SyncNormal => "Warrant, audit sync, sidecar synchronous=normal",
            Setup::Floor => "proxy-wasm floor (Warrant's host calls, no work)",
        }
    }
}

/// The agents of the bench: a human who delegates, two middle agents, the
/// sender (last delegate), and the recipient name.
pub struct Cast {
    pub human: Agent,
    pub mid: Agent,
    pub mid2: Agent,
    pub sender: Agent,
    /// The recipient, reached as `:authority` [`RECIPIENT_AUTHORITY`].
    pub recipient: String,
    /// The filter's `facts` setting, when not the default (all).
    pub facts: Option<Vec<String>>,
}

/// The `:authority` the shipped config maps to the recipient `bob`.
pub const RECIPIENT_AUTHORITY: &str = "bob.agents.local";

impl Cast {
    /// Fresh keys for everyone.
    pub fn new() -> Cast {
        Cast {
            human: Agent::new("human"),
            mid: Agent::new("agent-mid"),
            mid2: Agent::new("agent-mid2"),
            sender: Agent::new("test-agent"),
            recipient: "bob".into(),
            facts: None,
        }
    }

    /// The plugin-config patch: the three keys (the shipped config's `bob`
    /// key and authority map stay), replay detection off, and `audit.mode`
    /// when `mode` is set.
    pub fn patch(&self, mode: Option<&'static str>) -> impl Fn(&mut serde_json::Value) {
        let keys: Vec<(String, String)> = [&self.human, &self.mid, &self.mid2, &self.sender]
            .iter()
            .map(|a| (a.name.clone(), a.public_base64()))
            .collect();
        let facts = self.facts.clone();
        move |json: &mut serde_json::Value| {
            if let Some(facts) = &facts {
                json["facts"] = facts.clone().into();
            }
            for (name, key) in &keys {
                json["keys"][name] = key.clone().into();
            }
            // wrk sends one request file over and over, which for a signed
            // envelope is a replay: the table would refuse all but the
            // first. So the bench runs without replay detection, and its
            // figures leave out that check (one shared-data read and write
            // per signed envelope; not measured here).
            json["replay"]["enabled"] = false.into();
            if let Some(mode) = mode {
                json["audit"]["mode"] = mode.into();
            }
        }
    }

    /// A 2-hop chain, human → agent-mid → test-agent, scoped to the
    /// recipient, valid for an hour from now.
    pub fn delegation_header(&self) -> String {
        self.chain(2, now_secs())
    }

    /// A chain of `hops` tokens (1 to 3) ending at the sender: human →
    /// [agent-mid →] [agent-mid2 →] test-agent, issued at `at` (Unix
    /// seconds; chains issued at different seconds differ in every byte
    /// that matters to a cache) and valid for an hour from then.
    pub fn chain(&self, hops: usize, at: i64) -> String {
        self.chain_at(hops, Timestamp::from_unix_secs(at))
    }

    /// [`Cast::chain`] issued at `at`, to the nanosecond (the header carries
    /// the nanoseconds, the signatures only the seconds): chains issued in
    /// the same second still differ.
    pub fn chain_at(&self, hops: usize, at: Timestamp) -> String {
        let agents: Vec<&Agent> = match hops {
            1 => vec![&self.human, &self.sender],
            2 => vec![&self.human, &self.mid, &self.sender],
            _ => vec![&self.human, &self.mid, &self.mid2, &self.sender],
        };
        let mut keys = warrant_delegation::keys::KeyStore::new();
        let policy = warrant_delegation::VerifyPolicy::new();
        let mut tokens: Vec<Token> = Vec::new();
        for pair in agents.windows(2) {
            let (by, to) = (pair[0], pair[1]);
            keys.insert(by.name.clone(), by.key.verifying_key());
            let parent = if tokens.is_empty() {
                None
            } else {
                let header = encode_header(&tokens);
                let parsed = warrant_delegation::Chain::parse(header.as_bytes(), policy.limits())
                    .expect("own chain parses");
                Some(
                    parsed
                        .verify_ignoring_recipient(&keys, &policy, at)
                        .expect("own chain verifies"),
                )
            };
            tokens.push(self.token(by, &to.name, parent.as_ref(), at));
        }
        encode_header(&tokens)
    }

    fn token(
        &self,
        by: &Agent,
        to: &str,
        parent: Option<&warrant_delegation::VerifiedChain>,
        at: Timestamp,
    ) -> Token {
        let request = MintRequest {
            delegator: &by.name,
            delegate: to,
            scope: vec![self.recipient.clone()],
            tools: vec![],
            ttl: Duration::from_secs(3600),
            max_depth: 3,
            parent,
        };
        mint(&by.key, &request, at).expect("mint")
    }
}

impl Default for Cast {
    fn default() -> Cast {
        Cast::new()
    }
}

/// One Envoy under test with its upstream and (for the filter) sidecar.
pub struct BenchStack {
    // Field order is drop order: Envoy first.
    pub envoy: Envoy,
    pub sidecar: Option<Sidecar>,
    pub upstream: FastUpstream,
    pub setup: Setup,
    pub config: PathBuf,
    pub dir: PathBuf,
}

impl BenchStack {
    /// Renders the config for `setup` into `dir` and starts everything.
    /// `mode` is the `audit.mode` to set (None: leave it out).
    pub fn start(
        setup: Setup,
        mode: Option<&'static str>,
        cast: &Cast,
        dir: &Path,
        concurrency: u32,
    ) -> BenchStack {
        std::fs::create_dir_all(dir).expect("stack dir");
        let upstream = FastUpstream::start();
        let sidecar = match setup {
            Setup::Baseline | Setup::Floor => None,
            Setup::Sync | Setup::Async => Some(Sidecar::start(&dir.join("audit.db"), dir)),
            Setup::SyncNormal => Some(Sidecar::start_flagged(
                &dir.join("audit.db"),
                dir,
                "127.0.0.1:0",
                &["--synchronous".to_string(), "normal".to_string()],
            )),
        };
        let config = dir.join("envoy.yaml");
        // The baseline's audit cluster is never used: port 1 (nothing listens).
        let audit = sidecar.as_ref().map_or(1, |s| s.port);
        render(setup, &config, Ports { audit, upstream: upstream.port() }, &cast.patch(mode));
        let envoy = Envoy::start(&config, dir, concurrency);
        BenchStack { envoy, sidecar, upstream, setup, config, dir: dir.to_path_buf() }
    }

    /// Envoy's listener port.
    pub fn port(&self) -> u16 {
        self.envoy.port
    }
}

/// Renders `envoy/envoy.yaml` for `setup` into `out`: the baseline is the
/// same document without the wasm HTTP filter, the floor the same document
/// with the floor filter's module (and an empty configuration) in it.
pub fn render(setup: Setup, out: &Path, ports: Ports, patch: &dyn Fn(&mut serde_json::Value)) {
    let template = crate::repo_root().join("envoy/envoy.yaml");
    envoy::render(&template, out, ports, patch);
    if setup.runs_warrant() {
        return;
    }
    let text = std::fs::read_to_string(out).expect("read rendered config");
    let mut doc: Value = serde_yaml::from_str(&text).expect("rendered config is YAML");
    let changed = if setup == Setup::Baseline {
        remove_wasm_filters(&mut doc)
    } else {
        let floor = crate::floor_wasm_path();
        for_each_wasm_filter(&mut doc, &mut |config| {
            config["vm_config"]["code"]["local"]["filename"] = floor.display().to_string().into();
            config["vm_config"]["vm_id"] = "warrant-floor".into();
            config["root_id"] = "warrant-floor".into();
            config["configuration"]["value"] = "{}".into();
        })
    };
    assert!(changed > 0, "no wasm filter found in envoy/envoy.yaml");
    std::fs::write(out, serde_yaml::to_string(&doc).expect("render")).expect("write config");
}

/// The HTTP filter name of Envoy's Wasm filter.
const WASM_FILTER: &str = "envoy.filters.http.wasm";

/// Runs `change` on the `config` of every `envoy.filters.http.wasm` entry
/// of the listeners' HTTP filter chains; returns how many.
fn for_each_wasm_filter(doc: &mut Value, change: &mut dyn FnMut(&mut Value)) -> usize {
    let mut found = 0;
    for http in http_filter_lists(doc) {
        for filter in http.iter_mut() {
            if filter.get("name").and_then(Value::as_str) == Some(WASM_FILTER) {
                if let Some(config) =
                    filter.get_mut("typed_config").and_then(|t| t.get_mut("config"))
                {
                    change(config);
                    found += 1;
                }
            }
        }
    }
    found
}

/// Removes every `envoy.filters.http.wasm` entry from the listeners' HTTP
/// filter chains; returns how many.
fn remove_wasm_filters(doc: &mut Value) -> usize {
    let mut removed = 0;
    for http in http_filter_lists(doc) {
        let before = http.len();
        http.retain(|f| f.get("name").and_then(Value::as_str) != Some(WASM_FILTER));
        removed += before - http.len();
    }
    removed
}

/// The `http_filters` lists of every listener's filter chains.
fn http_filter_lists(doc: &mut Value) -> Vec<&mut Vec<Value>> {
    let listeners = doc
        .get_mut("static_resources")
        .and_then(|r| r.get_mut("listeners"))
        .and_then(Value::as_sequence_mut)
        .expect("listeners");
    let mut lists = Vec::new();
    for listener in listeners {
        let chains = listener
            .get_mut("filter_chains")
            .and_then(Value::as_sequence_mut)
            .expect("filter_chains");
        for chain in chains {
            let filters = chain.get_mut("filters").and_then(Value::as_sequence_mut);
            for filter in filters.into_iter().flatten() {
                let http = filter
                    .get_mut("typed_config")
                    .and_then(|t| t.get_mut("http_filters"))
                    .and_then(Value::as_sequence_mut);
                lists.extend(http);
            }
        }
    }
    lists
}

// ---------------------------------------------------------------------------
// Traffic

/// The kind of agent traffic in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Traffic {
    /// MCP JSON-RPC `tools/call` with arguments; the sender is named by the
    /// trusted `x-warrant-agent` header (as a JWT filter would set it).
    McpToolsCall,
    /// An oktsec envelope signed with Ed25519 by the sender.
    SignedEnvelope,
    /// A signed envelope whose content is the rule benchmark's mixed
    /// traffic ([`bodies::mixed`]: prose, Markdown, JSON, logs, shell,
    /// code) of `body_size` bytes; the body is longer by the envelope's
    /// other fields and the JSON escapes.
    MixedEnvelope,
}

impl Traffic {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Traffic::McpToolsCall => "MCP tools/call",
            Traffic::SignedEnvelope => "signed envelope",
            Traffic::MixedEnvelope => "signed envelope of mixed traffic",
        }
    }

    /// A raw HTTP/1.1 request of exactly `body_size` body bytes (content
    /// bytes for [`Traffic::MixedEnvelope`]), with the delegation chain
    /// `chain`. `seed` varies the text (not the mixed traffic's).
    pub fn request(self, cast: &Cast, chain: &str, body_size: usize, seed: u64) -> Vec<u8> {
        let (path, body, extra) = match self {
            Traffic::McpToolsCall => (
                "/mcp",
                mcp_body(body_size, seed),
                format!("x-warrant-agent: {}\r\n", cast.sender.name),
            ),
            Traffic::SignedEnvelope => (
                "/v1/message",
                envelope_body(&cast.sender, &cast.recipient, body_size, seed),
                String::new(),
            ),
            Traffic::MixedEnvelope => {
                let content = bodies::mixed(body_size);
                let body = cast.sender.envelope(&cast.recipient, &content).to_string();
                ("/v1/message", body.into_bytes(), String::new())
            }
        };
        if self != Traffic::MixedEnvelope {
            assert_eq!(body.len(), body_size, "{} body size", self.name());
        }
        raw_request(path, &body, chain, &extra)
    }
}

/// A raw HTTP/1.1 POST of a JSON `body` to the recipient, with the
/// delegation chain `chain` (none when empty) and `extra` header lines.
pub fn raw_request(path: &str, body: &[u8], chain: &str, extra: &str) -> Vec<u8> {
    let delegation =
        if chain.is_empty() { String::new() } else { format!("x-oktsec-delegation: {chain}\r\n") };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {RECIPIENT_AUTHORITY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\
         {delegation}{extra}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// The bodies of the rule engine's own benchmark: one definition of the
/// prose both benchmarks send (sentences without quotes, backslashes or
/// control characters, so their JSON encoding is the text itself).
#[path = "../../filter/rules/benches/support/bodies.rs"]
mod bodies;

/// `len` bytes of prose, chosen by a small deterministic generator
/// ([`bodies::prose`]), with a tidy end (no trailing space).
pub fn prose(len: usize, seed: u64) -> String {
    let mut text = bodies::prose(len, seed);
    if text.ends_with(' ') {
        text.pop();
        text.push('.');
    }
    text
}

/// A `tools/call` of exactly `size` bytes: a report-writing tool with a few
/// arguments and a long text argument.
pub fn mcp_body(size: usize, seed: u64) -> Vec<u8> {
    let build = |text: &str| {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": seed,
            "method": "tools/call",
            "params": {
                "name": "write_report",
                "arguments": {
                    "title": "Quarterly business review",
                    "format": "markdown",
                    "sections": ["summary", "revenue", "customers", "next steps"],
                    "max_words": 1200,
                    "draft": text,
                }
            }
        })
        .to_string()
        .into_bytes()
    };
    let overhead = build("").len();
    build(&prose(size.saturating_sub(overhead), seed))
}

/// A signed envelope of exactly `size` bytes, timestamped now.
pub fn envelope_body(sender: &Agent, to: &str, size: usize, seed: u64) -> Vec<u8> {
    let overhead = sender.envelope(to, "").to_string().len();
    sender.envelope(to, &prose(size.saturating_sub(overhead), seed)).to_string().into_bytes()
}

// ---------------------------------------------------------------------------
// Statistics and machine facts

/// The `q`-quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The mean of sorted values between their 10th and 90th percentiles (a
/// tenth cut from each end); NaN for fewer than ten.
pub fn trimmed_mean(sorted: &[u64]) -> f64 {
    if sorted.len() < 10 {
        return f64::NAN;
    }
    let cut = sorted.len() / 10;
    let middle = &sorted[cut..sorted.len() - cut];
    middle.iter().sum::<u64>() as f64 / middle.len() as f64
}

/// (min, median, max) of some values; NaN for none.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
    (v[0], median, v[v.len() - 1])
}

/// `nproc`, the CPU model and total memory, in one line.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    format!("{cpus} CPUs (nproc), {model}, {:.1} GiB RAM", mem_kib as f64 / (1024.0 * 1024.0))
}

/// The CPU time all threads of process `pid` have run so far, in
/// nanoseconds: the sum of the first field of each
/// `/proc/PID/task/TID/schedstat` (the scheduler's own accounting, not
/// tick-sampled). Threads that ended before the call are not counted.
pub fn cpu_nanos(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// The resident size, in bytes, of each V8 wasm linear memory of process
/// `pid`. V8 reserves 8–10 GiB of address space per 32-bit memory (for its
/// guard regions) as one anonymous `PROT_NONE` mapping and makes the first
/// `memory.size` bytes read-write, which splits it in two adjacent
/// anonymous mappings: `rw-p` (the memory) then `---p` (the guard). A
/// memory is such a pair spanning at least 4 GiB; nothing else in Envoy
/// maps that much. Only touched pages are resident, so this is the memory a
/// VM has used, not `memory.size`.
pub fn wasm_memories(pid: u32) -> Vec<u64> {
    struct Mapping {
        start: u64,
        end: u64,
        perms: String,
        anonymous: bool,
        rss: u64,
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let first = fields.first().copied().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping header: "start-end perms offset dev inode [path]".
            let (start, end) = first.split_once('-').unwrap_or(("0", "0"));
            maps.push(Mapping {
                start: u64::from_str_radix(start, 16).unwrap_or(0),
                end: u64::from_str_radix(end, 16).unwrap_or(0),
                perms: fields.get(1).copied().unwrap_or("").to_string(),
                anonymous: fields.len() < 6,
                rss: 0,
            });
        } else if let (Some(last), Some(rest)) = (maps.last_mut(), line.strip_prefix("Rss:")) {
            last.rss = rest.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    maps.windows(2)
        .filter(|pair| {
            let (memory, guard) = (&pair[0], &pair[1]);
            memory.anonymous
                && guard.anonymous
                && memory.perms.starts_with("rw")
                && guard.perms.starts_with("---")
                && memory.end == guard.start
                && guard.end - memory.start >= 4 << 30
        })
        .map(|pair| pair[0].rss * 1024)
        .collect()
}

/// A process's resident set size in bytes (`VmRSS`).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Times `envoy --mode validate` on a config, in seconds.
pub fn time_validate(config: &Path) -> (bool, f64) {
    let start = Instant::now();
    let (ok, _) = envoy::validate(config);
    (ok, start.elapsed().as_secs_f64())
}

/// From an Envoy log with `wasm:info`, each VM's time between the filter's
/// `starting` line (`on_vm_start`) and its `configured` line
/// (`on_configure`), in milliseconds, paired by thread.
pub fn vm_configure_times(log: &str) -> Vec<f64> {
    let mut started: Vec<(String, f64)> = Vec::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((stamp, thread)) = log_stamp(line) else { continue };
        if line.contains("warrant-filter") && line.contains("starting") {
            started.push((thread, stamp));
        } else if line.contains("warrant: configured") {
            if let Some(i) = started.iter().position(|(t, _)| *t == thread) {
                let (_, begin) = started.remove(i);
                out.push((stamp - begin) * 1000.0);
            }
        }
    }
    out
}

/// `[YYYY-MM-DD HH:MM:SS.mmm][thread]...` → (seconds of the day, thread).
fn log_stamp(line: &str) -> Option<(f64, String)> {
    let rest = line.strip_prefix('[')?;
    let (stamp, rest) = rest.split_once(']')?;
    let time = stamp.split_whitespace().nth(1)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    let thread = rest.strip_prefix('[')?.split_once(']')?.0.to_string();
    Some((h * 3600.0 + m * 60.0 + s, thread))
}

/// One Criterion result: the benchmark id and its median time (and
/// throughput, when the bench sets one), as printed.
#[derive(Debug, Clone, PartialEq)]
pub struct CriterionResult {
    pub id: String,
    pub time: String,
    pub seconds: f64,
    pub throughput: Option<String>,
}

/// Reads Criterion's terminal output: `ID  time: [low median high]`, with
/// the id on the line before when it is long, and an optional `thrpt:` line.
pub fn parse_criterion(output: &str) -> Vec<CriterionResult> {
    let mut results: Vec<CriterionResult> = Vec::new();
    let mut last_id = String::new();
    for line in output.lines() {
        if let Some(at) = line.find("time:") {
            let id = line[..at].trim();
            let id = if id.is_empty() { last_id.clone() } else { id.to_string() };
            if let Some(median) = middle(&line[at + 5..]) {
                let seconds = to_seconds(&median);
                results.push(CriterionResult { id, time: median, seconds, throughput: None });
            }
        } else if let Some(at) = line.find("thrpt:") {
            if let (Some(last), Some(median)) = (results.last_mut(), middle(&line[at + 6..])) {
                last.throughput = Some(median);
            }
        } else if !line.starts_with(' ') && !line.trim().is_empty() {
            let t = line.trim();
            if !t.starts_with("Benchmarking")
                && !t.starts_with("Found")
                && !t.starts_with("Warning")
                && !t.starts_with("change:")
                && !t.contains("outlier")
            {
                last_id = t.to_string();
            }
        }
    }
    results
}

/// `[a u b v c w]` → "b v".
fn middle(rest: &str) -> Option<String> {
    let inner = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
    let parts: Vec<&str> = inner.split_whitespace().collect();
    (parts.len() == 6).then(|| format!("{} {}", parts[2], parts[3]))
}

fn to_seconds(value: &str) -> f64 {
    let mut it = value.split_whitespace();
    let n: f64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(f64::NAN);
    let scale = match it.next().unwrap_or("") {
        "ps" => 1e-12,
        "ns" => 1e-9,
        "µs" | "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        _ => f64::NAN,
    };
    n * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_exact_size_and_parse() {
        let agent = Agent::new("test-agent");
        for size in [1 << 10, 64 << 10] {
            let mcp: serde_json::Value = serde_json::from_slice(&mcp_body(size, 3)).unwrap();
            assert_eq!(mcp["method"], "tools/call");
            assert_eq!(mcp_body(size, 3).len(), size);
            let env = envelope_body(&agent, "bob", size, 3);
            assert_eq!(env.len(), size);
            let env: serde_json::Value = serde_json::from_slice(&env).unwrap();
            assert_eq!(env["to"], "bob");
        }
    }

    #[test]
    fn criterion_output_is_read_with_long_and_short_ids() {
        let out = "Benchmarking scan/engine/1KiB: Analyzing\n\
scan/engine/1KiB        time:   [5.0000 µs 5.2000 µs 5.4000 µs]\n\
                        thrpt:  [180.00 MiB/s 187.00 MiB/s 195.00 MiB/s]\n\
parse+verify 1-hop (cold)\n\
                        time:   [120.00 µs 121.50 µs 123.00 µs]\n\
Found 2 outliers among 30 measurements (6.67%)\n";
        let r = parse_criterion(out);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].id, "scan/engine/1KiB");
        assert_eq!(r[0].time, "5.2000 µs");
        assert_eq!(r[0].throughput.as_deref(), Some("187.00 MiB/s"));
        assert_eq!(r[1].id, "parse+verify 1-hop (cold)");
        assert!((r[1].seconds - 121.5e-6).abs() < 1e-9);
    }

    #[test]
    fn spread_and_quantiles() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(spread(&[1.0, 2.0, 3.0, 4.0]).1, 2.5);
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), 5.0);
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99), 10.0);
        // 1 and 100 cut; the mean of 2..=9.
        assert_eq!(trimmed_mean(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 100]), 5.5);
        assert!(trimmed_mean(&[1, 2, 3]).is_nan());
    }

    #[test]
    fn log_stamps_pair_by_thread() {
        let log = "[2026-01-01 10:00:00.100][11][info][wasm] [x] wasm log warrant: warrant-filter 0.1.0 starting\n\
[2026-01-01 10:00:00.150][12][info][wasm] [x] wasm log warrant: warrant-filter 0.1.0 starting\n\
[2026-01-01 10:00:00.400][11][info][wasm] [x] wasm log warrant: warrant: configured (node)\n\
[2026-01-01 10:00:00.250][12][info][wasm] [x] wasm log warrant: warrant: configured (node)\n";
        let times = vm_configure_times(log);
        assert_eq!(times.len(), 2);
        assert!((times[0] - 300.0).abs() < 0.01 && (times[1] - 100.0).abs() < 0.01, "{times:?}");
    }
}
