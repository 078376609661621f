//! Generates the tonic service for `warrant.audit.v1.AuditService` from the
//! one proto file, reusing the message types of `warrant-wire` rather than
//! generating a second copy of them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts are single-threaded: nothing reads the environment
    // concurrently.
    std::env::set_var("PROTOC", protoc);
    let proto = "../filter/wire/proto/warrant/audit/v1/audit.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".warrant.audit.v1", "::warrant_wire")
        .compile_protos(&[proto], &["../filter/wire/proto"])?;
    Ok(())
}
