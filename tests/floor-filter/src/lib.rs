//! The proxy-wasm floor under Warrant: an HTTP filter that makes the host
//! calls Warrant's filter makes for a 1 KiB MCP `tools/call` with a cached
//! delegation chain and `audit.mode = async`, and does nothing else (no
//! parsing, no scan, no hashing, no record, no gRPC). `scripts/bench` runs
//! it as its own configuration, so the table shows how much of Warrant's
//! cost is Envoy's and V8's for the calls themselves, in the same run.
//!
//! Per request, as the real filter does on that path:
//! - request headers: read all of them, the clock, 16 random bytes (the
//!   record's id), and pause for the body;
//! - end of the body: read it, the clock, one shared-data read and
//!   compare-and-swap (the session bucket), the clock twice (around the
//!   scan), two counters (the scan's bytes and time), one counter (the
//!   decision),
//!   eight properties (decision, sender, session and five `delegation_*`
//!   facts), the session header on the request, the clock again (the
//!   record's latency) and the gauge of buffered records;
//! - response headers: the session header;
//! - each of those callbacks: the clock on entry and on return (the
//!   request's filter time);
//! - the stream's log: two counters (the work counters of its chain check).
//!
//! Host-call failures are ignored: this is a measuring instrument, and
//! every call it makes succeeds in an HTTP context in Envoy. It uses the
//! SDK's host calls, which the workspace's `clippy.toml` denies for the
//! product (a status they do not expect traps); the floor's calls cost the
//! host what Warrant's raw ones do.

#![allow(clippy::disallowed_methods)]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

/// The session id both headers carry (32 hex digits, as Warrant's).
const SESSION: &str = "5c0ffee0d15ea5e5b01dfacecafebabe";
/// The shared-data key of the one session bucket.
const BUCKET: &str = "warrant-floor.session.0";
/// The facts, named as Warrant names its own (under another prefix).
const FACTS: [&str; 8] = [
    "floor.decision",
    "floor.sender",
    "floor.session",
    "floor.delegation_root",
    "floor.delegation_delegate",
    "floor.delegation_depth",
    "floor.delegation_chain_hash",
    "floor.delegation_path",
];

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| Box::new(FloorRoot::default()));
}}

/// Metric ids, defined at configuration.
#[derive(Debug, Default, Clone, Copy)]
struct FloorRoot {
    decisions: u32,
    buffered: u32,
    scan_bytes: u32,
    scan_nanos: u32,
    work_requests: u32,
    work_nanos: u32,
}

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.decisions =
            hostcalls::define_metric(MetricType::Counter, "warrant_floor.decisions").unwrap_or(0);
        self.buffered =
            hostcalls::define_metric(MetricType::Gauge, "warrant_floor.buffered").unwrap_or(0);
        let counter = |name| hostcalls::define_metric(MetricType::Counter, name).unwrap_or(0);
        self.scan_bytes = counter("warrant_floor.scan.bytes");
        self.scan_nanos = counter("warrant_floor.scan.nanoseconds");
        self.work_requests = counter("warrant_floor.work.cached.requests");
        self.work_nanos = counter("warrant_floor.work.cached.nanoseconds");
        // The bucket exists before the first request, as Warrant's do.
        let _ = hostcalls::set_shared_data(BUCKET, Some(b"{}"), None);
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FloorHttp { root: *self }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[derive(Debug)]
struct FloorHttp {
    root: FloorRoot,
}

impl Context for FloorHttp {}

impl HttpContext for FloorHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        timed(|| self.request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        timed(|| self.request_body(body_size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        timed(|| {
            let _ = hostcalls::set_map_value(
                MapType::HttpResponseHeaders,
                "x-oktsec-session",
                Some(SESSION),
            );
            Action::Continue
        })
    }

    fn on_log(&mut self) {
        let _ = hostcalls::increment_metric(self.root.work_requests, 1);
        let _ = hostcalls::increment_metric(self.root.work_nanos, 1);
    }
}

/// A callback's work between two clock reads, as Warrant times each one.
fn timed(work: impl FnOnce() -> Action) -> Action {
    let _ = hostcalls::get_current_time();
    let action = work();
    let _ = hostcalls::get_current_time();
    action
}

impl FloorHttp {
    fn request_headers(&self, end_of_stream: bool) -> Action {
        let _ = hostcalls::get_map(MapType::HttpRequestHeaders);
        let _ = hostcalls::get_current_time();
        let mut id = [0u8; 16];
        let _ = getrandom::fill(&mut id);
        if end_of_stream {
            self.decide(0);
            return Action::Continue;
        }
        Action::Pause
    }

    fn request_body(&self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        self.decide(body_size);
        Action::Continue
    }

    fn decide(&self, body_size: usize) {
        if body_size > 0 {
            let _ = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size);
        }
        let _ = hostcalls::get_current_time();
        if let Ok((Some(bucket), cas)) = hostcalls::get_shared_data(BUCKET) {
            let _ = hostcalls::set_shared_data(BUCKET, Some(&bucket), cas);
        }
        let _ = hostcalls::get_current_time();
        let _ = hostcalls::get_current_time();
        let _ = hostcalls::increment_metric(self.root.scan_bytes, 1024);
        let _ = hostcalls::increment_metric(self.root.scan_nanos, 1);
        let _ = hostcalls::increment_metric(self.root.decisions, 1);
        for fact in FACTS {
            let _ = hostcalls::set_property(vec![fact], Some(SESSION.as_bytes()));
        }
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            "x-oktsec-session",
            Some(SESSION),
        );
        let _ = hostcalls::get_current_time();
        // Warrant moves its gauge by +1 here (and down again as the
        // sidecar acknowledges, once per batch); a move by 0 is the same
        // host call without a gauge that only grows.
        let _ = hostcalls::increment_metric(self.root.buffered, 0);
    }
}
