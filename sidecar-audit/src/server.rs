//! The gRPC service: records in, acknowledgements out once they are durable,
//! and signed checkpoints on a schedule.
//!
//! One writer thread owns the database ([`Store`]). Requests hand their
//! record to it over a bounded channel with a oneshot for the answer. The
//! writer takes whatever is queued (up to [`MAX_BATCH`]) and appends it in
//! one transaction (group commit), then answers every request of the batch.
//! An acknowledgement therefore always means "committed with
//! `synchronous = FULL`".
//!
//! Checkpoints ([`CheckpointPolicy`]): the writer signs the head once
//! `every` entries are uncovered, or once the oldest uncovered entry has
//! waited `interval` (also when no more records arrive), and when it stops.
//! A checkpoint due with a batch is stored in that batch's transaction
//! ([`Store::append_batch_signed`]), so it costs no sync of its own.
//! So an acknowledged record is covered by a signature within about
//! `interval` plus one commit, unless the process dies first; then the next
//! start checks the uncovered tail ([`serve`]) and signs it.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use warrant_wire::{AppendAck, AuditBatch, AuditBatchAck, AuditRecord};

use crate::metrics::Metrics;
use crate::proto::audit_service_server::AuditService;
use crate::store::{Appended, Durability, Store};

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Records waiting for the writer before callers wait for room.
pub const QUEUE_DEPTH: usize = 8192;
/// Largest record accepted over gRPC by default, in bytes
/// (`--max-record-bytes`). A larger record is refused with `OUT_OF_RANGE`.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Largest `AppendBatch` message accepted (or `--max-record-bytes`, when
/// that is larger): the filter's batches stay under 1 MiB of records plus
/// their framing. Any larger message is refused by tonic with
/// `OUT_OF_RANGE` before it is decoded.
pub const MAX_BATCH_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

type Job = (AuditRecord, oneshot::Sender<Result<Appended, String>>);
/// Where the writer's answer to one [`Job`] arrives.
type Answer = oneshot::Receiver<Result<Appended, String>>;

/// When the writer signs a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Sign once this many entries are not covered. Default 1000
    /// (`--checkpoint-every`).
    pub every: u64,
    /// Sign once the oldest uncovered entry is this old. Default 1 s
    /// (`--checkpoint-interval-ms 1000`).
    pub interval: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> CheckpointPolicy {
        CheckpointPolicy { every: 1000, interval: Duration::from_millis(1000) }
    }
}

/// The handle the gRPC service uses to reach the writer thread.
#[derive(Debug, Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// Why a record was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The writer has stopped (shutting down).
    Stopped,
    /// SQLite refused the batch (disk full, read-only file, ...).
    Storage(String),
}

impl Writer {
    /// Starts the writer thread on an opened store, signing checkpoints with
    /// `key` under `policy`. The thread ends, after a last checkpoint, when
    /// every `Writer` clone is dropped; `done` receives once it has.
    ///
    /// # Errors
    /// The thread or its timer cannot be started.
    pub fn start(
        store: Store,
        key: SigningKey,
        policy: CheckpointPolicy,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Writer, std_mpsc::Receiver<()>)> {
        let (jobs, queue) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let (done_tx, done) = std_mpsc::channel();
        // A small runtime of its own gives the thread a receive with a
        // timeout (tokio channels work across runtimes).
        let timer = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let mut state = WriterLoop { store, key, policy, metrics, uncovered: 0, since: None };
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
            state.run(queue, &timer);
            // Close the database (checkpointing the WAL into the main
            // file) before saying we are done.
            drop(state);
            let _ = done_tx.send(());
        })?;
        Ok((Writer { jobs }, done))
    }

    /// Appends one record, waiting until it is durable.
    ///
    /// # Errors
    /// [`AppendError`] when it was not stored.
    pub async fn append(&self, record: AuditRecord) -> Result<Appended, AppendError> {
        let answer = self.queue(record).await?;
        Self::durable(answer).await
    }

    /// Appends `records` in order, waiting until all are durable. They are
    /// queued one after the other, so they enter the chain in this order
    /// (other callers' records may come between them) and usually in one
    /// group commit.
    ///
    /// # Errors
    /// [`AppendError`] when one was not stored (the others may have been:
    /// retransmitting them is answered as duplicates).
    pub async fn append_all(
        &self,
        records: Vec<AuditRecord>,
    ) -> Result<Vec<Appended>, AppendError> {
        let mut answers = Vec::with_capacity(records.len());
        for record in records {
            answers.push(self.queue(record).await?);
        }
        let mut appended = Vec::with_capacity(answers.len());
        for answer in answers {
            appended.push(Self::durable(answer).await?);
        }
        Ok(appended)
    }

    /// Hands `record` to the writer thread; the receiver gets its answer.
    async fn queue(&self, record: AuditRecord) -> Result<Answer, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send((record, reply)).await.map_err(|_| AppendError::Stopped)?;
        Ok(answer)
    }

    /// Waits for the writer's answer to one queued record.
    async fn durable(answer: Answer) -> Result<Appended, AppendError> {
        match answer.await {
            Ok(Ok(appended)) => Ok(appended),
            Ok(Err(e)) => Err(AppendError::Storage(e)),
            Err(_) => Err(AppendError::Stopped),
        }
    }
}

/// The writer thread's state.
struct WriterLoop {
    store: Store,
    key: SigningKey,
    policy: CheckpointPolicy,
    metrics: Arc<Metrics>,
    /// Entries appended since the last checkpoint.
    uncovered: u64,
    /// When the oldest of them was committed.
    since: Option<Instant>,
}

impl WriterLoop {
    fn run(&mut self, mut queue: mpsc::Receiver<Job>, timer: &tokio::runtime::Runtime) {
        loop {
            let next = match self.since {
                Some(since) => {
                    let wait = self.policy.interval.saturating_sub(since.elapsed());
                    timer.block_on(async { tokio::time::timeout(wait, queue.recv()).await })
                }
                None => Ok(timer.block_on(queue.recv())),
            };
            let first = match next {
                Err(_) => {
                    // The oldest uncovered entry has waited `interval`.
                    self.checkpoint();
                    continue;
                }
                Ok(None) => break,
                Ok(Some(job)) => job,
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        self.checkpoint();
    }

    /// Commits a batch; when a checkpoint is due with it (`every` reached,
    /// or the oldest uncovered entry has waited `interval`), it is signed
    /// in the same transaction.
    fn commit(&mut self, batch: Vec<Job>) {
        let records: Vec<AuditRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
        let overdue = self.since.is_some_and(|s| s.elapsed() >= self.policy.interval);
        let due = overdue || self.uncovered + records.len() as u64 >= self.policy.every;
        match self.store.append_batch_signed(&records, now_ns(), due.then_some(&self.key)) {
            Ok((results, signed)) => {
                let new = results.iter().filter(|a| !a.duplicate).count() as u64;
                self.metrics.batch_committed(new, results.len() as u64 - new);
                if new > 0 {
                    self.uncovered += new;
                    self.since.get_or_insert_with(Instant::now);
                }
                if let Some(signed) = signed {
                    self.metrics.checkpoint_stored();
                    tracing::debug!(seq = signed.checkpoint.seq, "checkpoint signed");
                    self.uncovered = 0;
                    self.since = None;
                }
                for ((_, reply), result) in batch.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                self.metrics.batch_failed();
                let message = format!("{e:#}");
                tracing::error!(error = %message, records = batch.len(), "append failed");
                for (_, reply) in batch {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }

    fn checkpoint(&mut self) {
        match self.store.checkpoint(&self.key, now_ns()) {
            Ok(signed) => {
                if let Some(signed) = signed {
                    self.metrics.checkpoint_stored();
                    tracing::debug!(seq = signed.checkpoint.seq, "checkpoint signed");
                }
                self.uncovered = 0;
                self.since = None;
            }
            Err(e) => {
                // Keep `since`: the next wake-up tries again.
                self.metrics.checkpoint_failed();
                tracing::error!(error = %format!("{e:#}"), "checkpoint failed");
            }
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AuditServer {
    writer: Writer,
    max_record_bytes: usize,
}

impl AuditServer {
    /// A service appending through `writer` records of at most
    /// `max_record_bytes` encoded bytes each.
    pub fn new(writer: Writer, max_record_bytes: usize) -> AuditServer {
        AuditServer { writer, max_record_bytes }
    }

    /// The largest gRPC message the service must decode.
    pub fn max_message_bytes(&self) -> usize {
        self.max_record_bytes.max(MAX_BATCH_MESSAGE_BYTES)
    }

    /// Refuses a record without an id or over the size limit; `what` names
    /// it in the message.
    fn check(&self, record: &AuditRecord, what: &dyn Fn() -> String) -> Result<(), Status> {
        if record.message_id.is_empty() {
            return Err(Status::invalid_argument(format!("{} has no message_id", what())));
        }
        let size = prost::Message::encoded_len(record);
        if size > self.max_record_bytes {
            return Err(Status::out_of_range(format!(
                "{} is {size} bytes, over the limit of {} bytes (--max-record-bytes)",
                what(),
                self.max_record_bytes
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl AuditService for AuditServer {
    async fn append(&self, request: Request<AuditRecord>) -> Result<Response<AppendAck>, Status> {
        let record = request.into_inner();
        self.check(&record, &|| "the record".into())?;
        let appended = self.writer.append(record).await.map_err(status_of)?;
        Ok(Response::new(ack(&appended)))
    }

    async fn append_batch(
        &self,
        request: Request<AuditBatch>,
    ) -> Result<Response<AuditBatchAck>, Status> {
        let records = request.into_inner().records;
        for (i, record) in records.iter().enumerate() {
            self.check(record, &|| format!("record {i} of the batch"))?;
        }
        let appended = self.writer.append_all(records).await.map_err(status_of)?;
        Ok(Response::new(AuditBatchAck { acks: appended.iter().map(ack).collect() }))
    }
}

/// The acknowledgement of one stored record.
fn ack(appended: &Appended) -> AppendAck {
    AppendAck {
        seq: appended.seq,
        entry_hash: hex::encode(appended.hash),
        duplicate: appended.duplicate,
    }
}

/// The one mapping from append errors to gRPC codes.
fn status_of(error: AppendError) -> Status {
    match error {
        AppendError::Stopped => Status::unavailable("the audit writer is shutting down"),
        AppendError::Storage(e) => {
            Status::unavailable(format!("the audit database refused the record: {e}"))
        }
    }
}

/// Where the gRPC service listens: a TCP address (`127.0.0.1:50051`; port
/// 0 picks a free one) or a Unix socket (`unix:/run/warrant/audit.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a socket path, e.g. unix:/run/warrant/audit.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        text.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!(
                "`{text}` is not IP:PORT (e.g. 127.0.0.1:50051) or unix:PATH \
                 (e.g. unix:/run/warrant/audit.sock)"
            )
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Options of `warrant-audit serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Database path.
    pub db: PathBuf,
    /// gRPC listen address (`127.0.0.1:0` picks a free port).
    pub listen: ListenAddr,
    /// Largest gRPC message accepted, in bytes ([`MAX_RECORD_BYTES`]).
    pub max_record_bytes: usize,
    /// The audit page's listen address (default `127.0.0.1:0`).
    pub http_listen: std::net::SocketAddr,
    /// Where the signing key pair lives (default: the database's directory,
    /// see [`crate::keyfile`]).
    pub key_dir: PathBuf,
    /// When to sign checkpoints.
    pub checkpoints: CheckpointPolicy,
    /// How far each commit is synced before records are acknowledged.
    pub durability: Durability,
}

/// Turns off Nagle's algorithm on an accepted gRPC connection. An answer
/// is a few small HTTP/2 frames; with Nagle the last of them wait for the
/// peer's delayed ACK, which added about 10 ms to every `sync` request
/// (measured at 100 req/s: p50 12 ms with it, 2.3 ms without).
fn without_nagle(
    accepted: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    if let Ok(stream) = &accepted {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
        }
    }
    accepted
}

/// Runs the sidecar until SIGTERM or SIGINT.
///
/// On start it loads (or creates) the signing key, checks the entries not
/// yet covered by a checkpoint (with every checkpoint signature) and
/// refuses to extend a chain that does not verify, then signs that tail.
/// It prints `warrant-audit: listening grpc=ADDR` (`unix:PATH` for a
/// socket) and then
/// `warrant-audit: listening http=ADDR` on stdout once it accepts
/// connections. On stop it commits what is queued and signs a last
/// checkpoint.
///
/// # Errors
/// The key or database cannot be opened, the uncovered tail does not
/// verify, or an address cannot be bound.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let (key, created) = crate::keyfile::load_or_create(&options.key_dir)?;
    let public = key.verifying_key();
    let fingerprint = warrant_delegation::keys::fingerprint(&public);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        key_fingerprint = %fingerprint,
        created,
        "warrant-audit starting"
    );
    let mut store = Store::open(&options.db)?;
    store.set_durability(options.durability)?;
    check_tail(&store, &public, &options.db)?;
    store.checkpoint(&key, now_ns())?;
    tracing::info!(
        db = %options.db.display(),
        head_seq = store.head().seq,
        durability = ?options.durability,
        "audit chain opened"
    );
    let metrics = Arc::new(Metrics::default());
    let (writer, done) = Writer::start(store, key, options.checkpoints, metrics.clone())?;

    let grpc = bind_grpc(&options.listen).await?;
    let http = tokio::net::TcpListener::bind(options.http_listen)
        .await
        .map_err(|e| anyhow::anyhow!("{}: cannot listen: {e}", options.http_listen))?;
    println!("warrant-audit: listening grpc={}", grpc.address()?);
    println!("warrant-audit: listening http={}", http.local_addr()?);
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let page = crate::page::PageState { db: options.db.clone(), key: Some(public), metrics };
    let page = tokio::spawn(crate::page::serve(http, page, stopped(stop_rx.clone())));
    let server = AuditServer::new(writer, options.max_record_bytes);
    let max_message = server.max_message_bytes();
    let service = crate::proto::audit_service_server::AuditServiceServer::new(server)
        .max_decoding_message_size(max_message);
    let router = tonic::transport::Server::builder().add_service(service);
    let served = match grpc {
        Grpc::Tcp(listener) => {
            router
                .serve_with_incoming_shutdown(
                    // Each answer is a few small HTTP/2 frames: with Nagle's
                    // algorithm the last ones would wait for the filter's
                    // delayed ACK, and a `sync` request with them.
                    tokio_stream::StreamExt::map(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        without_nagle,
                    ),
                    stopped(stop_rx),
                )
                .await
        }
        Grpc::Unix(listener, path) => {
            let served = router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    stopped(stop_rx),
                )
                .await;
            let _ = std::fs::remove_file(&path);
            served
        }
    };
    served?;
    // The service (and so every Writer clone) is gone: the writer drains
    // what is queued, commits, signs a last checkpoint and stops.
    let _ = tokio::task::spawn_blocking(move || done.recv()).await;
    if let Ok(Err(e)) = page.await {
        tracing::error!(error = %format!("{e:#}"), "audit page stopped with an error");
    }
    tracing::info!("audit sidecar stopped");
    Ok(())
}

/// The bound gRPC listener.
enum Grpc {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Grpc {
    /// The address as printed: `127.0.0.1:PORT` or `unix:PATH`.
    fn address(&self) -> anyhow::Result<String> {
        Ok(match self {
            Grpc::Tcp(listener) => listener.local_addr()?.to_string(),
            Grpc::Unix(_, path) => format!("unix:{}", path.display()),
        })
    }
}

/// Binds the gRPC address. A Unix socket file left by a sidecar that died
/// is replaced; one a live sidecar answers on, or any other kind of file,
/// is refused. The socket is made mode 0660: only the sidecar's user and
/// group (put Envoy's user in it) can connect.
async fn bind_grpc(listen: &ListenAddr) -> anyhow::Result<Grpc> {
    match listen {
        ListenAddr::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("{addr}: cannot listen: {e}"))?;
            Ok(Grpc::Tcp(listener))
        }
        ListenAddr::Unix(path) => {
            use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    anyhow::bail!(
                        "{}: exists and is not a socket; refusing to replace it",
                        path.display()
                    );
                }
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    anyhow::bail!(
                        "{}: another process is listening on this socket",
                        path.display()
                    );
                }
                std::fs::remove_file(path).map_err(|e| {
                    anyhow::anyhow!("{}: cannot remove the stale socket: {e}", path.display())
                })?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .map_err(|e| anyhow::anyhow!("unix:{}: cannot listen: {e}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| anyhow::anyhow!("{}: cannot set mode 0660: {e}", path.display()))?;
            Ok(Grpc::Unix(listener, path.clone()))
        }
    }
}

/// Verifies what the newest checkpoint does not cover (and every checkpoint
/// signature) before the sidecar signs it.
fn check_tail(
    store: &Store,
    key: &ed25519_dalek::VerifyingKey,
    db: &std::path::Path,
) -> anyhow::Result<()> {
    let conn = store.connection();
    let covered =
        crate::store::latest_checkpoint(conn, &store.chain_id())?.map_or(0, |c| c.checkpoint.seq);
    let options = crate::verify::Options {
        key: Some(*key),
        limit: Some(store.head().seq.saturating_sub(covered)),
        ..crate::verify::Options::default()
    };
    let report = crate::verify::verify_connection(conn, &options, &mut |_, _| {})?;
    if let Some(broken) = report.broken {
        anyhow::bail!(
            "{}: the chain is broken at seq {} ({}); refusing to extend it\n\n\
             hint: run `warrant-audit verify --db {}` and keep the file as evidence; \
             start a new chain in another file",
            db.display(),
            broken.seq,
            broken.reason,
            db.display()
        );
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The sidecar's clock: Unix nanoseconds (0 before 1970).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{latest_checkpoint, read_chain_id};

    #[tokio::test]
    async fn grpc_connections_go_without_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(address);
        let (accepted, _client) = tokio::join!(listener.accept(), client);
        let stream = super::without_nagle(accepted.map(|(s, _)| s)).unwrap();
        assert!(stream.nodelay().unwrap());
    }

    #[test]
    fn a_due_checkpoint_is_committed_with_the_batch_that_reaches_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let key = SigningKey::from_bytes(&[9; 32]);
        // A long interval: only the count can make a checkpoint due.
        let policy = CheckpointPolicy { every: 3, interval: Duration::from_secs(3600) };
        let (writer, done) =
            Writer::start(Store::open(&db).unwrap(), key, policy, Arc::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let latest = || {
            let conn = Store::open_read_only(&db).unwrap();
            latest_checkpoint(&conn, &read_chain_id(&conn).unwrap()).unwrap()
        };
        for i in 1..=4u64 {
            let record = AuditRecord { message_id: format!("m{i}"), ..Default::default() };
            assert_eq!(runtime.block_on(writer.append(record)).unwrap().seq, i);
            // Acknowledged means committed, and so is a checkpoint due with it.
            let covered = latest().map(|c| c.checkpoint.seq);
            assert_eq!(covered, if i < 3 { None } else { Some(3) }, "after record {i}");
        }
        drop(writer);
        done.recv().unwrap();
        assert_eq!(latest().unwrap().checkpoint.seq, 4, "the last checkpoint at stop");
    }
}
