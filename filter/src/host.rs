//! Host calls the proxy-wasm SDK would trap on.
//!
//! - The SDK's `hostcalls::set_property` panics (a trap that kills the VM of
//!   that worker) on any status but `Ok`. Envoy answers `NotFound` outside a
//!   stream and `BadArgument` for a property declared read-only, and a
//!   future host may answer anything: this wrapper over the same import
//!   returns the status instead, so the filter logs it and goes on.
//! - The SDK's `hostcalls::get_map` panics on a header value that is not
//!   UTF-8, which any client can send (HTTP's `obs-text`, bytes 0x80–0xFF,
//!   which Envoy passes on), and copies every header into a `String`.
//!   [`request_headers`] hands over the host's buffer as it is, for
//!   [`warrant_core::request::decode_header_map`] to read in place.

#![allow(unsafe_code)]

/// A host status other than `Ok` (proxy-wasm ABI numbering: 1 `NotFound`,
/// 2 `BadArgument`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostStatus(pub(crate) u32);

// The SDK declares the same import returning its `Status` enum; this one
// reads the status as the plain `u32` it is on the wire, so an unknown value
// is no undefined behaviour. Both are one wasm import, `env.proxy_set_property`.
#[allow(clashing_extern_declarations)]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;

    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
}

/// `MapType::HttpRequestHeaders` in the ABI's numbering.
const HTTP_REQUEST_HEADERS: u32 = 0;

/// Sets the property `name` (a one-segment path) of the current stream to
/// `value`.
///
/// # Errors
/// The host's status when it is not `Ok`.
pub(crate) fn set_property(name: &str, value: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: both pointers come from live slices with their exact lengths,
    // and the host only reads them during the call (proxy-wasm ABI 0.2.1,
    // `proxy_set_property`).
    let status =
        unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    match status {
        0 => Ok(()),
        other => Err(HostStatus(other)),
    }
}

/// The request's headers in the host's serialisation (see
/// [`warrant_core::request::decode_header_map`]); empty when there are none.
///
/// # Errors
/// The host's status when it is not `Ok` (Envoy: `NotFound` outside a
/// request).
pub(crate) fn request_headers() -> Result<Vec<u8>, HostStatus> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer and a size into the two locals.
    // With `Ok` and a non-null pointer, the buffer was allocated in this
    // module through the SDK's `proxy_on_memory_allocate` export, which
    // returns the buffer of a `Vec<u8>` of capacity `size` that it forgot;
    // taking it back as a `Vec` of that length and capacity is how the SDK's
    // own `get_map` frees it (proxy-wasm 0.2.5).
    let status = unsafe { proxy_get_header_map_pairs(HTTP_REQUEST_HEADERS, &mut data, &mut size) };
    match status {
        0 if data.is_null() => Ok(Vec::new()),
        // SAFETY: as above; the buffer is owned by nothing else.
        0 => Ok(unsafe { Vec::from_raw_parts(data, size, size) }),
        other => Err(HostStatus(other)),
    }
}
