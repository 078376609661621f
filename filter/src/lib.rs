//! Warrant's proxy-wasm HTTP filter: the thin adapter between Envoy's
//! callbacks and the pure logic in `warrant-core`.
//!
//! Per request, the states are named after what they wait for:
//! - [`Stage::ExpectHeaders`]: nothing seen yet;
//! - [`Stage::ExpectBody`]: headers held (`Pause` with
//!   `allow_on_headers_stop_iteration: true`), body buffering;
//! - [`Stage::ExpectAuditAck`]: decided; the audit record is on its way to the
//!   sidecar and the request stays held until the acknowledgement
//!   (`audit.mode = "sync"`);
//! - [`Stage::ExpectResponseAck`]: Envoy answered by itself before the
//!   decision (its own 413, a timeout); that answer's record is on its way
//!   and the response waits for it (`sync`);
//! - [`Stage::Done`]: resumed or answered locally.
//!
//! In `sync` mode no byte of the request, not even its headers, reaches the
//! upstream before the decision and its acknowledged audit record (see
//! envoy/README.md for why `allow_on_headers_stop_iteration` is required
//! for this). In `async` mode the request goes on once decided, and its
//! record waits in the VM's [`Outbox`]: the root context's timer sends it,
//! and sends it again until the sidecar acknowledges it. Those calls are
//! dispatched from the root context so that their answers arrive there,
//! whether or not the request is still alive.
//!
//! Host calls go through [`host`], which returns every status the host
//! gives instead of trapping on it as the SDK's functions do; a trap would
//! kill the VM of this worker.

mod host;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use host::{Buffer, HeaderMap, HostStatus, Metric, Stream};
use log::{debug, error, info, warn};
use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use warrant_core::config::{AuditMode, IdentitySource, Policy};
use warrant_core::decision::Decision;
use warrant_core::outbox::{gap_record, Outbox, OutboxConfig, Settled};
use warrant_core::pipeline::{evaluate, refuse_early, ChainCheck, Env, Outcome, ScanCost};
use warrant_core::request::{decode_header_map, HeaderNames, RequestHead};
use warrant_delegation::ChainCache;
use warrant_session::{OsRandom, SetError, SharedStore, StoreError};
use warrant_wire::{AuditRecord, APPEND_BATCH_METHOD, APPEND_METHOD, AUDIT_SERVICE};

proxy_wasm::main! {{
    host::init_logging(log::LevelFilter::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(WarrantRoot::default()) });
}}

/// How often the root context looks at the outbox in `async` mode. It
/// bounds how long a record waits before its first attempt.
const TICK_MS: u32 = 20;

/// The gRPC status a server gives for a method it does not have.
const GRPC_UNIMPLEMENTED: u32 = 12;

/// Per-VM state: the compiled policy and metric ids.
struct WarrantRoot {
    shared: Option<Rc<Shared>>,
    /// The origin of the outbox's monotonic milliseconds.
    started: std::time::Instant,
}

impl Default for WarrantRoot {
    fn default() -> WarrantRoot {
        WarrantRoot { shared: None, started: std::time::Instant::now() }
    }
}

/// What every request of a VM shares.
struct Shared {
    policy: Policy,
    /// Counter id per decision, in [`Decision::ALL`] order.
    decision_counters: Vec<Option<u32>>,
    /// Counter id per rule id, defined on a rule's first finding.
    rule_counters: RefCell<std::collections::HashMap<String, u32>>,
    /// Verified delegation chains of this VM (a VM is single-threaded).
    chains: RefCell<ChainCache>,
    /// `async` mode: records waiting for the sidecar's acknowledgement.
    outbox: RefCell<Outbox>,
    /// Counter `warrant.audit.dropped`: records lost to a full outbox.
    dropped_counter: Option<u32>,
    /// Gauge `warrant.audit.buffered`: records in the outbox. Moved by
    /// deltas, never set, so Envoy's one gauge sums over all VMs.
    buffered_gauge: Option<u32>,
    /// Counters `warrant.scan.bytes` and `warrant.scan.nanoseconds`: the
    /// content the rule engine scanned and the time it took, so bytes ÷
    /// nanoseconds is its throughput inside Envoy.
    scan_counters: Option<(u32, u32)>,
    /// Counters `warrant.rules.regex_builds` and `warrant.rules.regex_drops`
    /// and gauge `warrant.rules.regex_bytes` (moved by deltas, so it sums
    /// over the VMs): the rule engine's built regexes, so a
    /// `rules.regex_memory_bytes` too small for the traffic shows as
    /// builds that keep growing.
    regex_metrics: Option<(u32, u32, u32)>,
    /// What [`Shared::regex_metrics`] last reported.
    regex_seen: std::cell::Cell<warrant_rules::RegexMemory>,
    /// Counters `warrant.work.<chain>.requests` and
    /// `warrant.work.<chain>.nanoseconds` per [`ChainCheck`], in
    /// [`ChainCheck::ALL`] order: decided requests and the time the filter's
    /// callbacks took on them, by what their delegation chain needed.
    work_counters: Vec<Option<(u32, u32)>>,
}

impl Shared {
    /// Moves the `warrant.audit.buffered` gauge by `delta`.
    fn buffered(&self, delta: i64) {
        if let Some(id) = self.buffered_gauge {
            add_to_metric(id, delta);
        }
    }

    /// Adds a request's scan to the scan counters, and what it changed in
    /// the built regexes to theirs.
    fn scanned(&self, scan: ScanCost) {
        self.regexes_changed();
        let Some((bytes, nanos)) = self.scan_counters else { return };
        if scan.bytes == 0 {
            return;
        }
        for (id, value) in [(bytes, scan.bytes), (nanos, scan.nanos)] {
            add_to_metric(id, i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Moves the regex metrics by what changed since they were last moved.
    fn regexes_changed(&self) {
        let Some((builds, drops, bytes)) = self.regex_metrics else { return };
        let now = self.policy.rules.regex_memory();
        let seen = self.regex_seen.replace(now);
        let delta = |now: u64, seen: u64| i64::try_from(now.wrapping_sub(seen)).unwrap_or(0);
        let held = |b: usize| i64::try_from(b).unwrap_or(i64::MAX);
        for (id, value) in [
            (builds, delta(now.builds, seen.builds)),
            (drops, delta(now.drops, seen.drops)),
            (bytes, held(now.bytes).saturating_sub(held(seen.bytes))),
        ] {
            if value != 0 {
                add_to_metric(id, value);
            }
        }
    }

    /// Adds a decided request's callback time to the work counters of its
    /// chain check.
    fn worked(&self, chain: ChainCheck, nanos: u64) {
        let index = ChainCheck::ALL.iter().position(|c| *c == chain);
        let Some(Some((requests, time))) = index.and_then(|i| self.work_counters.get(i)) else {
            return;
        };
        for (id, value) in [(*requests, 1), (*time, nanos)] {
            add_to_metric(id, i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Counts a decision and its rule findings. The names carry the
    /// decision code and rule id between fixed words, so Envoy's
    /// `stats_tags` turn them into labels (see envoy/envoy.yaml):
    /// `warrant.decision.<code>.requests`, `warrant.rule.<id>.findings`.
    fn count(&self, outcome_decision: Decision, rule_ids: &[&str]) {
        let index = Decision::ALL.iter().position(|d| *d == outcome_decision);
        if let Some(Some(id)) = index.and_then(|i| self.decision_counters.get(i)) {
            increment(*id);
        }
        let Ok(mut counters) = self.rule_counters.try_borrow_mut() else {
            return;
        };
        for rule in rule_ids {
            let id = match counters.get(*rule) {
                Some(id) => *id,
                None => {
                    let name = format!("warrant.rule.{rule}.findings");
                    match host::define_metric(Metric::Counter, &name) {
                        Ok(id) => {
                            counters.insert((*rule).to_string(), id);
                            id
                        }
                        Err(status) => {
                            debug!("define_metric {name} failed: {status}");
                            continue;
                        }
                    }
                }
            };
            increment(id);
        }
    }
}

fn increment(id: u32) {
    add_to_metric(id, 1);
}

/// Adds `delta` to metric `id` (a gauge may go down); a host refusal is
/// logged at debug level and otherwise ignored.
fn add_to_metric(id: u32, delta: i64) {
    if let Err(status) = host::increment_metric(id, delta) {
        debug!("increment_metric failed: {status}");
    }
}

/// Proxy-wasm shared data: one store for all VMs with our `vm_id`, so all
/// workers of this Envoy.
#[derive(Debug)]
struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
        host::shared_data(key).map_err(|status| StoreError::new(status.to_string()))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
        match host::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(HostStatus::CAS_MISMATCH) => Err(SetError::CasMismatch),
            Err(status) => Err(SetError::Store(StoreError::new(status.to_string()))),
        }
    }
}

impl WarrantRoot {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Queues a gap record when records were dropped and the sidecar
    /// answers again, then sends what the outbox says is due. Runs in the
    /// root context (from `on_tick` or a call's answer), so the answers
    /// come back here.
    fn flush(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let Ok(mut outbox) = shared.outbox.try_borrow_mut() else {
            return;
        };
        if let Some(dropped) = outbox.take_gap() {
            let node = &shared.policy.config.node;
            let record = gap_record(node, new_message_id(), dropped, now_nanos());
            warn!("warrant: recording an audit gap of {dropped} dropped records");
            outbox.push_gap(record.message_id.clone(), record.encode_to_vec());
            shared.buffered(1);
        }
        let now = self.now_ms();
        let audit = &shared.policy.config.audit;
        for due in outbox.due(now) {
            let method = if due.batch { APPEND_BATCH_METHOD } else { APPEND_METHOD };
            match hostcalls::dispatch_grpc_call(
                &audit.cluster,
                AUDIT_SERVICE,
                method,
                Vec::new(),
                Some(&due.bytes),
                Duration::from_millis(u64::from(audit.timeout_ms)),
            ) {
                Ok(token) => outbox.dispatched(due.call, token),
                Err(status) => {
                    debug!("warrant: cannot call the audit sidecar: {status:?}");
                    outbox.not_dispatched(due.call, now);
                }
            }
        }
    }
}

impl Context for WarrantRoot {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, _response_size: usize) {
        let Some(shared) = &self.shared else {
            return;
        };
        let now = self.now_ms();
        let Ok(mut outbox) = shared.outbox.try_borrow_mut() else {
            return;
        };
        let settled = match status_code {
            0 => outbox.acknowledged(token_id),
            GRPC_UNIMPLEMENTED => outbox.unimplemented(token_id, now),
            _ => outbox.failed(token_id, now),
        };
        drop(outbox);
        match settled {
            Settled::Removed { records } => {
                shared.buffered(-i64::try_from(records).unwrap_or(i64::MAX));
            }
            // Log the first failure of a run; the retries after it tell
            // the same story.
            Settled::Retry { message_id, records, backoff_ms, failures: 1 } => warn!(
                "warrant: {records} audit record(s) from {message_id} on not acknowledged \
                 (grpc status {status_code}); retrying in {backoff_ms} ms until they are"
            ),
            Settled::BatchesRefused => warn!(
                "warrant: the audit sidecar does not know {APPEND_BATCH_METHOD} (an older \
                 version); sending one {APPEND_METHOD} call per record from now on"
            ),
            Settled::Retry { .. } | Settled::Ignore => {}
        }
        self.flush();
    }
}

impl RootContext for WarrantRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        info!("warrant-filter {} starting", env!("CARGO_PKG_VERSION"));
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match host::buffer(Buffer::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes,
            Err(status) => {
                error!("warrant: cannot read the plugin configuration: {status}");
                return false;
            }
        };
        let bytes = if bytes.is_empty() { b"{}".to_vec() } else { bytes };
        let policy = match Policy::from_json(&bytes) {
            Ok(policy) => policy,
            Err(e) => {
                // Refusing here makes Envoy refuse the config at startup,
                // in `--mode validate` and over xDS.
                error!("warrant: {e}");
                return false;
            }
        };
        // Shared data has no create-if-absent: make every session bucket
        // exist before the first request, so the first write to each is a
        // compare-and-swap (see warrant-session).
        if let Err(e) = policy.sessions.prepare(&HostStore) {
            error!("warrant: cannot prepare the session table: {e}");
            return false;
        }
        if let Some(replay) = &policy.replay {
            if let Err(e) = replay.prepare(&HostStore) {
                error!("warrant: cannot prepare the replay table: {e}");
                return false;
            }
        }
        let delegation = &policy.config.delegation;
        let chains = RefCell::new(
            ChainCache::new(delegation.cache_entries).with_byte_limit(delegation.cache_bytes),
        );
        let decision_counters = Decision::ALL
            .iter()
            .map(|d| {
                let name = format!("warrant.decision.{}.requests", d.code());
                host::define_metric(Metric::Counter, &name).ok()
            })
            .collect();
        info!(
            "warrant: configured (node {:?}, {} keys, audit cluster {:?})",
            policy.config.node,
            policy.keys.len(),
            policy.config.audit.cluster
        );
        let capacity = policy.config.audit.buffer_records as usize;
        let outbox = RefCell::new(Outbox::new(OutboxConfig::with_capacity(capacity)));
        let counter = |name: &str| host::define_metric(Metric::Counter, name).ok();
        let dropped_counter = counter("warrant.audit.dropped");
        let buffered_gauge = host::define_metric(Metric::Gauge, "warrant.audit.buffered").ok();
        let scan_counters = counter("warrant.scan.bytes").zip(counter("warrant.scan.nanoseconds"));
        let regex_bytes = host::define_metric(Metric::Gauge, "warrant.rules.regex_bytes").ok();
        let regex_metrics = counter("warrant.rules.regex_builds")
            .zip(counter("warrant.rules.regex_drops"))
            .zip(regex_bytes)
            .map(|((builds, drops), bytes)| (builds, drops, bytes));
        let work_counters = ChainCheck::ALL
            .iter()
            .map(|chain| {
                let name = |what| format!("warrant.work.{}.{what}", chain.label());
                counter(&name("requests")).zip(counter(&name("nanoseconds")))
            })
            .collect();
        if policy.config.audit.mode == AuditMode::Async {
            if let Err(status) = host::set_tick_period_ms(TICK_MS) {
                error!("warrant: cannot start the audit timer: {status}");
                return false;
            }
        }
        self.shared = Some(Rc::new(Shared {
            policy,
            decision_counters,
            rule_counters: RefCell::new(std::collections::HashMap::new()),
            chains,
            outbox,
            dropped_counter,
            buffered_gauge,
            scan_counters,
            regex_metrics,
            regex_seen: std::cell::Cell::new(warrant_rules::RegexMemory::default()),
            work_counters,
        }));
        true
    }

    fn on_tick(&mut self) {
        self.flush();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(WarrantHttp {
            context_id,
            shared,
            stage: Stage::ExpectHeaders,
            response_headers: Vec::new(),
            forwarded: false,
            chain: None,
            busy_nanos: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Where a request is (see the crate doc).
enum Stage {
    ExpectHeaders,
    ExpectBody {
        head: Box<RequestHead>,
        message_id: String,
        body_size: usize,
    },
    ExpectAuditAck {
        outcome: Box<Outcome>,
    },
    /// Envoy answered before the filter decided; the response waits for
    /// that answer's record (`sync`).
    ExpectResponseAck,
    Done,
}

struct WarrantHttp {
    context_id: u32,
    shared: Rc<Shared>,
    stage: Stage,
    /// Set on the response (forwarded or local) once decided.
    response_headers: Vec<(String, String)>,
    /// Whether the request was resumed towards the upstream.
    forwarded: bool,
    /// Once decided: what the request's delegation chain needed.
    chain: Option<ChainCheck>,
    /// The time this request's callbacks took so far, by the host clock.
    busy_nanos: u64,
}

impl WarrantHttp {
    fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Runs a callback's work and adds the time it took to the request's
    /// (two clock reads per callback).
    fn timed<R>(&mut self, work: impl FnOnce(&mut WarrantHttp) -> R) -> R {
        let started = clock_nanos();
        let result = work(self);
        let took = clock_nanos().saturating_sub(started);
        self.busy_nanos = self.busy_nanos.saturating_add(took);
        result
    }

    /// Decides on the whole body and sends the record.
    fn decide_with_body(
        &mut self,
        head: RequestHead,
        message_id: String,
        body_size: usize,
    ) -> Action {
        let body = if body_size == 0 {
            Vec::new()
        } else {
            match host::buffer(Buffer::RequestBody, 0, body_size) {
                Ok(body) => body,
                Err(status) => {
                    error!("#{} on_http_request_body: cannot read body: {status}", self.context_id);
                    let message = "the request body could not be read".to_string();
                    let outcome =
                        self.refuse(&head, &message_id, Decision::InvalidRequest, message);
                    return self.send_record(outcome);
                }
            }
        };
        let shared = Rc::clone(&self.shared);
        let mut chains = match shared.chains.try_borrow_mut() {
            Ok(chains) => chains,
            Err(_) => {
                // Only one request runs at a time in a VM; a second borrow
                // would be our bug. Refuse rather than skip the checks.
                error!("#{} chain cache busy", self.context_id);
                let message = "internal error".to_string();
                let outcome = self.refuse(&head, &message_id, Decision::InvalidRequest, message);
                return self.send_record(outcome);
            }
        };
        let mut random = OsRandom;
        let mut env =
            Env { store: &HostStore, random: &mut random, chains: &mut chains, clock: clock_nanos };
        let outcome = evaluate(&shared.policy, &mut env, &head, &body, &message_id, now_nanos());
        drop(chains);
        self.send_record(outcome)
    }

    /// An outcome for a request refused before (or instead of) a full
    /// evaluation.
    fn refuse(
        &self,
        head: &RequestHead,
        message_id: &str,
        decision: Decision,
        message: String,
    ) -> Outcome {
        let mut chains = ChainCache::new(0);
        let mut random = OsRandom;
        let mut env =
            Env { store: &HostStore, random: &mut random, chains: &mut chains, clock: clock_nanos };
        refuse_early(self.policy(), &mut env, head, message_id, decision, message)
    }

    /// Sends the outcome's record to the sidecar and holds the request until
    /// it is acknowledged (`sync`), or buffers the record and carries out
    /// the decision at once (`async`).
    fn send_record(&mut self, mut outcome: Outcome) -> Action {
        stamp_latency(&mut outcome.record);
        self.shared.scanned(outcome.scan);
        self.chain = Some(outcome.chain);
        debug!(
            "#{} decision {} ({}) for {:?} -> {:?}",
            self.context_id,
            outcome.decision.code(),
            outcome.message,
            outcome.record.from,
            outcome.record.to
        );
        let audit = &self.policy().config.audit;
        let bytes = outcome.record.encode_to_vec();
        if audit.mode == AuditMode::Async {
            self.buffer_record(outcome.record.message_id.clone(), bytes);
            return self.carry_out(&outcome);
        }
        match self.call_sidecar(&bytes) {
            Ok(_token) => {
                self.stage = Stage::ExpectAuditAck { outcome: Box::new(outcome) };
                Action::Pause
            }
            Err(status) => {
                error!(
                    "#{} cannot call the audit sidecar (cluster {:?}): {status:?}",
                    self.context_id, audit.cluster
                );
                self.audit_failed(&outcome);
                Action::Pause
            }
        }
    }

    /// Sends one record to the sidecar from this request's context, so
    /// that the answer comes back to it (`sync`).
    fn call_sidecar(&self, record: &[u8]) -> Result<u32, proxy_wasm::types::Status> {
        let audit = &self.policy().config.audit;
        hostcalls::dispatch_grpc_call(
            &audit.cluster,
            AUDIT_SERVICE,
            APPEND_METHOD,
            Vec::new(),
            Some(record),
            Duration::from_millis(u64::from(audit.timeout_ms)),
        )
    }

    /// `async` mode: hands the record to the outbox. A full outbox drops
    /// it; the drop is counted and a gap record will say so in the chain.
    fn buffer_record(&self, message_id: String, bytes: Vec<u8>) {
        let Ok(mut outbox) = self.shared.outbox.try_borrow_mut() else {
            // Never held across a callback; this would be our bug.
            error!("#{} outbox busy: record {message_id} not buffered", self.context_id);
            return;
        };
        let pushed = outbox.push(message_id, bytes);
        drop(outbox);
        let Err(overflow) = pushed else {
            self.shared.buffered(1);
            return;
        };
        if let Some(id) = self.shared.dropped_counter {
            increment(id);
        }
        // One line per power of two, not one per request.
        if overflow.dropped_total.is_power_of_two() {
            error!(
                "#{} audit buffer full ({} records): {} records dropped so far",
                self.context_id,
                self.policy().config.audit.buffer_records,
                overflow.dropped_total
            );
        }
    }

    /// Carries out a decision whose record the sidecar acknowledged: the
    /// request is resumed, or answered locally.
    fn apply(&mut self, outcome: &Outcome) {
        if self.carry_out(outcome) == Action::Continue {
            if let Err(status) = host::resume(Stream::Request) {
                error!("#{} cannot resume the request: {status}", self.context_id);
            }
        }
    }

    /// Carries out a decision from inside a request callback: `Continue`
    /// when the request goes on (the caller returns it, or resumes the
    /// request from a callout's answer), `Pause` after a local reply.
    fn carry_out(&mut self, outcome: &Outcome) -> Action {
        self.stage = Stage::Done;
        self.response_headers.clone_from(&outcome.response_headers);
        let rules: Vec<&str> = outcome.findings.iter().map(|f| f.rule_id.as_str()).collect();
        self.shared.count(outcome.decision, &rules);
        self.export_facts(outcome);
        if outcome.decision.forwards() {
            for (name, value) in &outcome.forward_headers {
                if let Err(status) = host::set_header(HeaderMap::Request, name, value) {
                    error!("#{} cannot set {name}: {status}", self.context_id);
                }
            }
            self.forwarded = true;
            return Action::Continue;
        }
        let status = outcome.decision.http_status().unwrap_or(403);
        self.reply(status, &outcome.reply_body(outcome.decision));
        Action::Pause
    }

    /// Sets the verified facts the configuration asks for as Wasm
    /// properties. Envoy keeps property `P` as the filter state object
    /// `wasm.P` of this request, which the RBAC filter after this one
    /// (`filter_state` principals) and access logs
    /// (`%FILTER_STATE(wasm.warrant.sender:PLAIN)%`) read. Each property is
    /// set once per request; Envoy refuses a property only without a
    /// stream (never in an HTTP context) or when it was declared read-only
    /// (we declare none).
    fn export_facts(&self, outcome: &Outcome) {
        for (fact, value) in &outcome.facts {
            let name = fact.property();
            if let Err(status) = host::set_property(name, value.as_bytes()) {
                warn!("#{} cannot set property {name}: {status}", self.context_id);
            }
        }
    }

    /// No acknowledged record, no action: a request that would have been
    /// forwarded is answered 503 instead; a refusal is still refused (the
    /// safe direction), and the missing record is logged as an error.
    fn audit_failed(&mut self, outcome: &Outcome) {
        self.stage = Stage::Done;
        self.response_headers.clone_from(&outcome.response_headers);
        if outcome.decision.forwards() {
            self.shared.count(Decision::AuditUnavailable, &[]);
            self.reply(503, &outcome.reply_body(Decision::AuditUnavailable));
        } else {
            error!(
                "#{} audit record {} for decision {} was not acknowledged; refusing anyway",
                self.context_id,
                outcome.record.message_id,
                outcome.decision.code()
            );
            self.shared.count(outcome.decision, &[]);
            let status = outcome.decision.http_status().unwrap_or(403);
            self.reply(status, &outcome.reply_body(outcome.decision));
        }
    }

    /// What a body or trailers callback returns once the request is
    /// decided: it goes on only if the decision forwarded it. Returning
    /// `Continue` while a record is unacknowledged, or after a local reply,
    /// would let the request reach the upstream.
    fn after_decision(&self) -> Action {
        if self.forwarded {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    /// Records a response that Envoy itself gave while the filter was still
    /// reading the body, so before any decision: typically its own 413 when
    /// the body outgrew the virtual host's `request_body_buffer_limit` (a
    /// configuration below what `max_body_bytes` needs), or a timeout.
    /// Nothing was forwarded; the record says what the client got. In `sync`
    /// the response waits for the record's acknowledgement, as a decision
    /// would; if the sidecar fails it still goes out (it is a refusal
    /// already), and the failure is logged.
    fn record_envoy_answer(&mut self) -> Action {
        let Stage::ExpectBody { head, message_id, body_size } =
            std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Action::Continue;
        };
        let status = host::header(HeaderMap::Response, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u32>().ok())
            .unwrap_or(0);
        let (decision, message) = if status == 413 {
            let limit = self.policy().config.max_body_bytes;
            let message = format!(
                "Envoy answered 413 itself after {body_size} bytes of body, before the \
                 filter's limit of {limit}: raise the virtual host's request_body_buffer_limit \
                 to at least max_body_bytes + per_connection_buffer_limit_bytes + 1 MiB"
            );
            (Decision::PayloadTooLarge, message)
        } else {
            let message = format!(
                "Envoy answered {status} itself after {body_size} bytes of body, before the \
                 filter decided"
            );
            (Decision::InvalidRequest, message)
        };
        warn!("#{} {message}", self.context_id);
        let mut outcome = self.refuse(&head, &message_id, decision, message);
        outcome.record.http_status = status;
        stamp_latency(&mut outcome.record);
        self.chain = Some(outcome.chain);
        self.shared.count(outcome.decision, &[]);
        self.response_headers.clone_from(&outcome.response_headers);
        let audit = &self.policy().config.audit;
        let bytes = outcome.record.encode_to_vec();
        if audit.mode == AuditMode::Async {
            self.buffer_record(outcome.record.message_id.clone(), bytes);
            return Action::Continue;
        }
        match self.call_sidecar(&bytes) {
            Ok(_token) => {
                self.stage = Stage::ExpectResponseAck;
                Action::Pause
            }
            Err(status) => {
                error!(
                    "#{} cannot call the audit sidecar for Envoy's own answer: {status:?}",
                    self.context_id
                );
                Action::Continue
            }
        }
    }

    /// Empties the buffered body of a request that is refused already.
    /// Envoy keeps buffering a paused body up to the virtual host's
    /// `request_body_buffer_limit` and past it answers its own 413 before
    /// our reply; a refused body is never forwarded, so its bytes can go as
    /// they arrive.
    fn discard_refused_body(&self, body_size: usize) {
        let refused = match &self.stage {
            Stage::ExpectAuditAck { outcome } => !outcome.decision.forwards(),
            Stage::Done => !self.forwarded,
            _ => false,
        };
        if refused && body_size > 0 {
            if let Err(status) = host::set_buffer(Buffer::RequestBody, 0, body_size, &[]) {
                debug!("#{} cannot discard the refused body: {status}", self.context_id);
            }
        }
    }

    fn reply(&self, status: u32, body: &[u8]) {
        let headers = [("content-type", "application/json")];
        if let Err(e) = host::send_local_response(status, &headers, body) {
            error!("#{} cannot send the local reply: {e}", self.context_id);
        }
    }
}

impl Context for WarrantHttp {
    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, _response_size: usize) {
        self.timed(|this| this.audit_answered(status_code));
    }
}

impl HttpContext for WarrantHttp {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.timed(|this| this.request_headers(num_headers, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.timed(|this| this.request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.timed(WarrantHttp::request_trailers)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.timed(WarrantHttp::response_head)
    }

    fn on_log(&mut self) {
        if let Some(chain) = self.chain {
            self.shared.worked(chain, self.busy_nanos);
        }
    }
}

/// The callbacks' work, each timed by [`WarrantHttp::timed`].
impl WarrantHttp {
    /// The sidecar's answer to this request's record.
    fn audit_answered(&mut self, status_code: u32) {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        if matches!(stage, Stage::ExpectResponseAck) {
            if status_code != 0 {
                error!(
                    "#{} audit sidecar did not take the record of Envoy's own answer: grpc \
                     status {status_code}",
                    self.context_id
                );
            }
            if let Err(status) = host::resume(Stream::Response) {
                error!("#{} cannot resume the response: {status}", self.context_id);
            }
            return;
        }
        let Stage::ExpectAuditAck { outcome } = stage else {
            warn!("#{} unexpected gRPC response", self.context_id);
            return;
        };
        if status_code == 0 {
            self.apply(&outcome);
            return;
        }
        let detail = host::grpc_status()
            .map(|(_, message)| String::from_utf8_lossy(&message).into_owned())
            .unwrap_or_default();
        error!(
            "#{} audit sidecar refused the record: grpc status {status_code}: {detail}",
            self.context_id
        );
        self.audit_failed(&outcome);
    }

    fn request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let received = now_nanos();
        let serialized = host::request_headers().unwrap_or_else(|status| {
            error!("#{} on_http_request_headers: cannot read headers: {status}", self.context_id);
            Vec::new()
        });
        let headers = decode_header_map(&serialized).unwrap_or_else(|e| {
            error!("#{} on_http_request_headers: {e}", self.context_id);
            Vec::new()
        });
        let policy = self.policy();
        let names = HeaderNames {
            identity: &policy.config.identity.header,
            delegation: &policy.config.delegation.header,
            session: &policy.config.sessions.header,
        };
        let mut head = RequestHead::from_headers(headers, &names);
        head.received_at_unix_nanos = received;
        if policy.config.identity.sources.contains(&IdentitySource::Mtls) {
            head.peer_uri_sans = peer_uri_sans();
        }
        let message_id = new_message_id();
        if head.is_encoded() {
            // A compressed body would go upstream unscanned: refuse it.
            let message = format!(
                "content-encoding {:?} is not accepted: compressed bodies cannot be scanned",
                head.content_encoding.as_deref().unwrap_or("")
            );
            let outcome = self.refuse(&head, &message_id, Decision::UnsupportedEncoding, message);
            return self.send_record(outcome);
        }
        let limit = u64::from(policy.config.max_body_bytes);
        if head.content_length.is_some_and(|length| length > limit) {
            let message = format!(
                "body of {} bytes is over the limit of {limit}",
                head.content_length.unwrap_or(0)
            );
            let outcome = self.refuse(&head, &message_id, Decision::PayloadTooLarge, message);
            return self.send_record(outcome);
        }
        if end_of_stream {
            return self.decide_with_body(head, message_id, 0);
        }
        self.stage = Stage::ExpectBody { head: Box::new(head), message_id, body_size: 0 };
        Action::Pause
    }

    fn request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let limit = self.policy().config.max_body_bytes as usize;
        let Stage::ExpectBody { body_size: seen, .. } = &mut self.stage else {
            // Decided before the body ended (413, 415): keep holding it
            // until the local reply, or let it through once resumed.
            self.discard_refused_body(body_size);
            return self.after_decision();
        };
        // While paused, `body_size` is the total buffered so far.
        *seen = body_size;
        if body_size > limit {
            let Stage::ExpectBody { head, message_id, .. } =
                std::mem::replace(&mut self.stage, Stage::Done)
            else {
                return Action::Pause;
            };
            let message = format!("body grew past the limit of {limit} bytes");
            let outcome = self.refuse(&head, &message_id, Decision::PayloadTooLarge, message);
            return self.send_record(outcome);
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let Stage::ExpectBody { head, message_id, body_size } =
            std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return Action::Pause;
        };
        self.decide_with_body(*head, message_id, body_size)
    }

    fn response_head(&mut self) -> Action {
        let action = if matches!(self.stage, Stage::ExpectBody { .. }) {
            self.record_envoy_answer()
        } else {
            Action::Continue
        };
        // Local replies pass through here too (ours and Envoy's own), so
        // the session id reaches the caller whatever the decision.
        for (name, value) in &self.response_headers {
            if let Err(status) = host::set_header(HeaderMap::Response, name, value) {
                error!("#{} cannot set response header {name}: {status}", self.context_id);
            }
        }
        action
    }

    fn request_trailers(&mut self) -> Action {
        // With trailers, end_of_stream never arrives in the body callback:
        // the body is complete now.
        let Stage::ExpectBody { head, message_id, body_size } =
            std::mem::replace(&mut self.stage, Stage::Done)
        else {
            return self.after_decision();
        };
        self.decide_with_body(*head, message_id, body_size)
    }
}

/// Sets the record's `latency_micros`: from the request's arrival to now,
/// when the record leaves for the sidecar.
fn stamp_latency(record: &mut AuditRecord) {
    let elapsed = now_nanos().saturating_sub(record.received_at_unix_nanos).max(0) / 1000;
    record.latency_micros = u64::try_from(elapsed).unwrap_or(0);
}

/// The host's clock as [`Env::clock`] wants it (nanoseconds since 1970; 0
/// if the host refuses).
fn clock_nanos() -> u64 {
    host::current_time_nanos().unwrap_or(0)
}

/// The host's clock as the records hold it (signed nanoseconds).
fn now_nanos() -> i64 {
    i64::try_from(clock_nanos()).unwrap_or(i64::MAX)
}

/// A UUID v4 from the host's CSPRNG (WASI `random_get`).
fn new_message_id() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        error!("warrant: no randomness for the message id: {e}");
    }
    warrant_core::message_id::uuid_v4(bytes)
}

/// The mTLS peer certificate's URI SAN, when the connection has one.
fn peer_uri_sans() -> Vec<String> {
    match host::property(&["connection", "uri_san_peer_certificate"]) {
        Ok(Some(bytes)) if !bytes.is_empty() => {
            String::from_utf8(bytes).map(|s| vec![s]).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}
