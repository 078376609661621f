//! The gRPC service: records in, acknowledgements out once they are durable.
//!
//! One writer thread owns the database ([`Store`]). Requests hand their
//! record to it over a bounded channel with a oneshot for the answer. The
//! writer takes whatever is queued (up to [`MAX_BATCH`]) and appends it in
//! one transaction (group commit), then answers every request of the batch.
//! An acknowledgement therefore always means "committed with
//! `synchronous = FULL`".

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};
use warrant_wire::{AppendAck, AuditRecord};

use crate::proto::audit_service_server::AuditService;
use crate::store::{Appended, Store};

/// Most records committed in one transaction.
pub const MAX_BATCH: usize = 512;
/// Records waiting for the writer before callers wait for room.
pub const QUEUE_DEPTH: usize = 8192;
/// Largest record accepted over gRPC, in bytes.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

type Job = (AuditRecord, oneshot::Sender<Result<Appended, String>>);

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
    /// Starts the writer thread on an opened store. The thread ends when
    /// every `Writer` clone is dropped; `done` receives once it has.
    pub fn start(mut store: Store) -> (Writer, std_mpsc::Receiver<()>) {
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let (done_tx, done) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let records: Vec<AuditRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
                    match store.append_batch(&records, now_ns()) {
                        Ok(results) => {
                            for ((_, reply), result) in batch.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), records = batch.len(), "append failed");
                            for (_, reply) in batch {
                                let _ = reply.send(Err(format!("{e:#}")));
                            }
                        }
                    }
                }
                // Close the database (checkpointing the WAL into the main
                // file) before saying we are done.
                drop(store);
                let _ = done_tx.send(());
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the writer thread: {e}"));
        (Writer { jobs }, done)
    }

    /// Appends one record, waiting until it is durable.
    ///
    /// # Errors
    /// [`AppendError`] when it was not stored.
    pub async fn append(&self, record: AuditRecord) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send((record, reply)).await.map_err(|_| AppendError::Stopped)?;
        match answer.await {
            Ok(Ok(appended)) => Ok(appended),
            Ok(Err(e)) => Err(AppendError::Storage(e)),
            Err(_) => Err(AppendError::Stopped),
        }
    }
}

/// The tonic service.
#[derive(Debug, Clone)]
pub struct AuditServer {
    writer: Writer,
}

impl AuditServer {
    /// A service appending through `writer`.
    pub fn new(writer: Writer) -> AuditServer {
        AuditServer { writer }
    }
}

#[tonic::async_trait]
impl AuditService for AuditServer {
    async fn append(&self, request: Request<AuditRecord>) -> Result<Response<AppendAck>, Status> {
        let record = request.into_inner();
        if record.message_id.is_empty() {
            return Err(Status::invalid_argument("record has no message_id"));
        }
        let appended = self.writer.append(record).await.map_err(status_of)?;
        Ok(Response::new(AppendAck {
            seq: appended.seq,
            entry_hash: hex::encode(appended.hash),
            duplicate: appended.duplicate,
        }))
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

/// Options of `warrant-audit serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Database path.
    pub db: PathBuf,
    /// gRPC listen address (`127.0.0.1:0` picks a free port).
    pub listen: std::net::SocketAddr,
}

/// Runs the sidecar until SIGTERM or SIGINT. Prints
/// `warrant-audit: listening grpc=ADDR` on stdout once it accepts
/// connections.
///
/// # Errors
/// The database cannot be opened or the address cannot be bound.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let store = Store::open(&options.db)?;
    tracing::info!(db = %options.db.display(), head_seq = store.head().seq, "audit chain opened");
    let (writer, done) = Writer::start(store);
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| anyhow::anyhow!("{}: cannot listen: {e}", options.listen))?;
    let bound = listener.local_addr()?;
    println!("warrant-audit: listening grpc={bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let service =
        crate::proto::audit_service_server::AuditServiceServer::new(AuditServer::new(writer))
            .max_decoding_message_size(MAX_RECORD_BYTES);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown_signal(),
        )
        .await?;
    // The service (and so every Writer clone) is gone: the writer drains
    // what is queued, commits, and stops.
    let _ = tokio::task::spawn_blocking(move || done.recv()).await;
    tracing::info!("audit sidecar stopped");
    Ok(())
}

async fn shutdown_signal() {
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

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
