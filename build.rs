//! Compiles the BuildKit protocol subset in `proto/` with protox (a pure-Rust
//! protobuf compiler), so building bkd needs no `protoc` on the machine.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "moby/buildkit/v1/control.proto",
    "moby/buildkit/v1/frontend/gateway.proto",
    "moby/filesync/v1/filesync.proto",
    "moby/filesync/v1/auth.proto",
    "moby/buildkit/secrets/v1/secrets.proto",
    "moby/sshforward/v1/ssh.proto",
    "grpc/health/v1/health.proto",
    "containerd/services/content/v1/content.proto",
    "google/rpc/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
