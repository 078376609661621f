//! Every host call the filter makes, over the raw proxy-wasm ABI (0.2.1),
//! each returning the host's status instead of trapping on it.
//!
//! The SDK's `hostcalls` functions `panic!` on any status their authors did
//! not expect for a call (a panic is a trap that kills the VM of that
//! worker), `unwrap` UTF-8 conversions of what the host hands over, and
//! read the status as a Rust enum, which is undefined behaviour for a value
//! outside it. Some of those statuses are reachable: Envoy answers
//! `BadArgument` when a request header is set after the headers went on,
//! `NotFound` for a property outside a stream; and a client controls header
//! values (HTTP's `obs-text`, bytes 0x80–0xFF, which Envoy passes on and
//! the SDK's `get_map` trapped on). Here every status comes back as a
//! [`HostStatus`] and what the host hands over stays bytes.
//!
//! The one SDK call left is `hostcalls::dispatch_grpc_call`: the SDK's
//! dispatcher must register the call's token to route its answer to the
//! context that made it, and that registration is not public. It returns
//! the statuses Envoy gives for a call that cannot start (`ParseFailure` for
//! an unknown cluster, `InternalFailure`) as errors. `clippy.toml` denies
//! the other `hostcalls` functions, so no new code goes around this module.

#![allow(unsafe_code)]

use std::fmt;
use std::ptr::{null, null_mut};

/// A host status other than `Ok`, numbered as in the proxy-wasm ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostStatus(pub(crate) u32);

impl HostStatus {
    pub(crate) const NOT_FOUND: HostStatus = HostStatus(1);
    pub(crate) const CAS_MISMATCH: HostStatus = HostStatus(8);
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "unknown",
        };
        write!(f, "host status {} ({name})", self.0)
    }
}

/// A buffer the host lends (ABI `BufferType`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Buffer {
    RequestBody = 0,
    PluginConfiguration = 7,
}

/// A header map of the current stream (ABI `MapType`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum HeaderMap {
    Request = 0,
    Response = 2,
}

/// A direction of the current HTTP stream (ABI `StreamType`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Request = 0,
    Response = 1,
}

/// A kind of metric (ABI `MetricType`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Metric {
    Counter = 0,
    Gauge = 1,
}

// The SDK declares the same imports returning its `Status` enum; these read
// the status as the plain `u32` it is on the wire. Each pair is one wasm
// import (`env.<name>`), so the declarations may differ in Rust.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

fn checked(status: u32) -> Result<(), HostStatus> {
    match status {
        0 => Ok(()),
        other => Err(HostStatus(other)),
    }
}

/// Takes over a buffer the host returned.
///
/// # Safety
/// After an `Ok` status, `data` is null or points to `size` bytes that the
/// host allocated in this module through the SDK's
/// `proxy_on_memory_allocate` export (a boxed slice of exactly `size`
/// bytes, forgotten), owned by nothing else. Taking it back as a `Vec` of
/// that length and capacity is how the SDK frees such buffers (0.2.5).
unsafe fn host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        // SAFETY: as the function's contract says.
        unsafe { Vec::from_raw_parts(data, size, size) }
    }
}

/// Writes a line to Envoy's log at `level` (ABI `LogLevel`: 0 trace to 5
/// critical).
pub(crate) fn log(level: u32, message: &str) -> Result<(), HostStatus> {
    // SAFETY: the pointer and length come from a live `&str`, read by the
    // host during the call only.
    checked(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

/// The host's clock, in nanoseconds since 1970.
pub(crate) fn current_time_nanos() -> Result<u64, HostStatus> {
    let mut now = 0u64;
    // SAFETY: the host writes one u64 into the local.
    checked(unsafe { proxy_get_current_time_nanoseconds(&mut now) })?;
    Ok(now)
}

/// Sets the root context's timer period (0 stops it).
pub(crate) fn set_tick_period_ms(period: u32) -> Result<(), HostStatus> {
    // SAFETY: no memory is passed.
    checked(unsafe { proxy_set_tick_period_milliseconds(period) })
}

/// Up to `max_size` bytes of `buffer` from `start`; empty when the host has
/// no such buffer (`NotFound`) or it is empty.
pub(crate) fn buffer(buffer: Buffer, start: usize, max_size: usize) -> Result<Vec<u8>, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a pointer and a size into the two locals.
    let status =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    match checked(status) {
        // SAFETY: `Ok`, see `host_bytes`.
        Ok(()) => Ok(unsafe { host_bytes(data, size) }),
        Err(HostStatus::NOT_FOUND) => Ok(Vec::new()),
        Err(status) => Err(status),
    }
}

/// Replaces `size` bytes of `buffer` from `start` with `data`.
pub(crate) fn set_buffer(
    buffer: Buffer,
    start: usize,
    size: usize,
    data: &[u8],
) -> Result<(), HostStatus> {
    // SAFETY: the pointer and length come from a live slice, read by the
    // host during the call only.
    checked(unsafe {
        proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len())
    })
}

/// The request's headers in the host's serialisation (see
/// [`warrant_core::request::decode_header_map`]); empty when there are none.
pub(crate) fn request_headers() -> Result<Vec<u8>, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a pointer and a size into the two locals.
    let status =
        unsafe { proxy_get_header_map_pairs(HeaderMap::Request as u32, &mut data, &mut size) };
    checked(status)?;
    // SAFETY: `Ok`, see `host_bytes`.
    Ok(unsafe { host_bytes(data, size) })
}

/// The value of header `name` in `map`, as bytes; `None` when absent.
pub(crate) fn header(map: HeaderMap, name: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: `name` is a live `&str` read during the call; the host writes
    // a pointer and a size into the two locals.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    match checked(status) {
        // SAFETY: `Ok`, see `host_bytes`.
        Ok(()) => Ok(Some(unsafe { host_bytes(data, size) })),
        Err(HostStatus::NOT_FOUND) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets header `name` of `map` to `value`, replacing any values it had.
/// Envoy answers `BadArgument` once that map went on (request headers after
/// the request was resumed).
pub(crate) fn set_header(map: HeaderMap, name: &str, value: &str) -> Result<(), HostStatus> {
    // SAFETY: both pointers come from live `&str`s, read during the call.
    checked(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// The property at `path` (its segments, e.g. `["connection",
/// "uri_san_peer_certificate"]`); `None` when the host has none.
pub(crate) fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostStatus> {
    // The ABI's path: the segments joined by NUL bytes.
    let serialized = path.join("\0");
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: `serialized` is live during the call; the host writes a
    // pointer and a size into the two locals.
    let status =
        unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) };
    match checked(status) {
        // SAFETY: `Ok`, see `host_bytes`.
        Ok(()) => Ok((!data.is_null()).then(|| unsafe { host_bytes(data, size) })),
        Err(HostStatus::NOT_FOUND) => Ok(None),
        Err(status) => Err(status),
    }
}

/// Sets the property `name` (a one-segment path) of the current stream to
/// `value`. Envoy keeps it as the filter state object `wasm.<name>`.
pub(crate) fn set_property(name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: both pointers come from live slices, read during the call.
    checked(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// The shared data at `key` and its compare-and-swap version (`None` for
/// a version of 0); `(None, None)` when the key was never set.
pub(crate) fn shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), HostStatus> {
    let mut data = null_mut();
    let mut size = 0usize;
    let mut cas = 0u32;
    // SAFETY: `key` is live during the call; the host writes into the three
    // locals.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match checked(status) {
        Ok(()) => {
            let cas = (cas != 0).then_some(cas);
            // SAFETY: `Ok`, see `host_bytes`.
            Ok(((!data.is_null()).then(|| unsafe { host_bytes(data, size) }), cas))
        }
        Err(HostStatus::NOT_FOUND) => Ok((None, None)),
        Err(status) => Err(status),
    }
}

/// Sets the shared data at `key`, if its version is still `cas` (`None`:
/// whatever it is). A stale `cas` is [`HostStatus::CAS_MISMATCH`].
pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostStatus> {
    // SAFETY: both pointers come from live slices, read during the call.
    checked(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// Resumes a paused direction of the current stream.
pub(crate) fn resume(stream: Stream) -> Result<(), HostStatus> {
    // SAFETY: no memory is passed.
    checked(unsafe { proxy_continue_stream(stream as u32) })
}

/// Answers the current request locally with `status`, `headers` and
/// `body`, instead of the upstream.
pub(crate) fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HostStatus> {
    let serialized = warrant_core::request::encode_header_map(headers);
    // SAFETY: the pointers come from live slices, read during the call; no
    // details string (null, 0); -1: not a gRPC answer.
    checked(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

/// The gRPC status of the call being answered, and its message (bytes as
/// the server sent them, after Envoy's decoding).
pub(crate) fn grpc_status() -> Result<(u32, Vec<u8>), HostStatus> {
    let mut code = 0u32;
    let mut data = null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes into the three locals.
    checked(unsafe { proxy_get_status(&mut code, &mut data, &mut size) })?;
    // SAFETY: `Ok`, see `host_bytes`.
    Ok((code, unsafe { host_bytes(data, size) }))
}

/// Defines (or finds) the metric `name`; its id.
pub(crate) fn define_metric(kind: Metric, name: &str) -> Result<u32, HostStatus> {
    let mut id = 0u32;
    // SAFETY: `name` is live during the call; the host writes the id.
    checked(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `offset` (which may be negative, for a gauge) to metric `id`.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), HostStatus> {
    // SAFETY: no memory is passed.
    checked(unsafe { proxy_increment_metric(id, offset) })
}

/// The `log` crate's logger over [`log`], in place of the SDK's (which
/// unwraps the host's status).
#[derive(Debug)]
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl ::log::Log for HostLogger {
    fn enabled(&self, metadata: &::log::Metadata<'_>) -> bool {
        metadata.level() <= ::log::max_level()
    }

    fn log(&self, record: &::log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            ::log::Level::Trace => 0,
            ::log::Level::Debug => 1,
            ::log::Level::Info => 2,
            ::log::Level::Warn => 3,
            ::log::Level::Error => 4,
        };
        // A line the host refuses is lost; there is nowhere else to say so.
        let _ = log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`, and a panic hook that logs the panic at
/// `critical` before the trap (release builds abort on a panic; the filter
/// has none that we know of, and clippy denies the usual sources).
pub(crate) fn init_logging(level: ::log::LevelFilter) {
    // Fails only when a logger is set already: the one from an earlier
    // start of this module instance, which is this one.
    let _ = ::log::set_logger(&LOGGER);
    ::log::set_max_level(level);
    std::panic::set_hook(Box::new(|info| {
        let _ = log(5, &info.to_string());
    }));
}
