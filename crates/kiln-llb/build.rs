//! Generates the LLB types (`pb`) from BuildKit's vendored `ops.proto` with
//! protox (a protobuf compiler in Rust, so no `protoc`) and prost-build.
//!
//! Maps are `BTreeMap`s: Go's deterministic marshal writes map entries
//! sorted by key, and an op's digest is the sha256 of its bytes.
//!
//! prost writes a oneof at the position of its lowest field number; Go's
//! marshal writes every oneof after the message's other fields. The two
//! agree unless a oneof is numbered below a plain field. In ops.proto that is
//! only `Op` (`op` is 2-8, `platform` 10, `constraints` 11), which
//! `kiln_llb::marshal_op` writes in Go's order; this script fails the build
//! if a new BuildKit schema has another such message, so it cannot slip by.

use std::path::PathBuf;

use prost_types::{DescriptorProto, FileDescriptorSet};

const PROTO_ROOT: &str = "proto";
const OPS: &str = "github.com/moby/buildkit/solver/pb/ops.proto";
/// Messages whose marshal kiln orders by hand.
const HAND_ORDERED: &[&str] = &["pb.Op"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let fds = protox::compile([OPS], [PROTO_ROOT])?;
    check_oneof_order(&fds)?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .btree_map(["."])
        .out_dir(&out)
        .compile_fds(fds)?;
    Ok(())
}

fn check_oneof_order(fds: &FileDescriptorSet) -> Result<(), String> {
    fn walk(prefix: &str, m: &DescriptorProto, bad: &mut Vec<String>) {
        let name = format!("{prefix}.{}", m.name());
        let (mut plain_max, mut oneof_min) = (0, i32::MAX);
        for f in &m.field {
            // proto3 `optional` fields are synthetic oneofs, marshalled in
            // place by both.
            if f.oneof_index.is_some() && !f.proto3_optional() {
                oneof_min = oneof_min.min(f.number());
            } else {
                plain_max = plain_max.max(f.number());
            }
        }
        if oneof_min < plain_max && !HAND_ORDERED.contains(&name.as_str()) {
            bad.push(name.clone());
        }
        for n in &m.nested_type {
            walk(&name, n, bad);
        }
    }
    let mut bad = Vec::new();
    for f in fds.file.iter().filter(|f| f.name() == OPS) {
        for m in &f.message_type {
            walk(f.package(), m, &mut bad);
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{bad:?} in `{OPS}` have a oneof numbered below a plain field: prost and Go's \
             deterministic marshal order them differently, so they need a hand-ordered \
             encoder like `marshal_op`"
        ))
    }
}
