//! Generates the gateway API types from BuildKit's vendored protos (the
//! ones `kiln-llb` vendors, see its `proto/README.md`) with protox and
//! prost-build, no `protoc`. LLB messages (package `pb`) are `kiln-llb`'s
//! own types, so a `Definition` passes between the two without conversion.

use std::path::PathBuf;

const PROTO_ROOT: &str = "../../crates/kiln-llb/proto";
const FILES: &[&str] = &[
    "github.com/moby/buildkit/frontend/gateway/pb/gateway.proto",
    "github.com/moby/buildkit/solver/errdefs/errdefs.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let fds = protox::compile(FILES, [PROTO_ROOT])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .btree_map(["."])
        .extern_path(".pb", "::kiln_llb::pb")
        .include_file("_includes.rs")
        .out_dir(&out)
        .compile_fds(fds)?;
    Ok(())
}
