//! Host calls the proxy-wasm SDK would trap on.
//!
//! The SDK's `hostcalls::set_property` panics (a trap that kills the VM of
//! that worker) on any status but `Ok`. Envoy answers `NotFound` outside a
//! stream and `BadArgument` for a property declared read-only, and a future
//! host may answer anything: this wrapper over the same import returns the
//! status instead, so the filter logs it and goes on.

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
}

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
