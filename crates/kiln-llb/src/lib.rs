//! kiln's build graph as BuildKit LLB.
//!
//! [`emit`] turns a [`kiln_dag::Definition`] into BuildKit's `pb.Definition`
//! ([`pb::Definition`]): every vertex becomes a marshalled [`pb::Op`] whose
//! digest is the sha256 of its bytes (as BuildKit computes it), inputs refer
//! to those digests, per-op metadata (progress names, capabilities) is keyed
//! by digest, and a last op with only an input names the result. The
//! built-in static base becomes one file op on scratch, so BuildKit needs no
//! extra image. [`image_config`] gives the image configuration the gateway
//! frontend returns as `containerimage.config`.
//!
//! [`pb`] is generated at build time from BuildKit v0.32.2's own
//! `solver/pb/ops.proto` (vendored under `proto/` with its license; protox
//! and prost-build, no `protoc`). Ops are marshalled by [`marshal_op`] in the
//! field order of Go's deterministic marshal, so the digests kiln computes
//! are the ones BuildKit recomputes; `tests/remarshal.rs` holds them to
//! BuildKit's Go code (`llb-remarshal`) for every example and op kind.
//!
//! [`to_text`] decodes a marshalled definition back into readable text (the
//! snapshot tests use it), and [`Graph`] reads one as a graph for the parity
//! tests against kiln's own DAG.
//!
//! Where kiln and BuildKit differ (see `docs/buildkit.md`): kiln's `Host`
//! network is BuildKit's default sandbox network (BuildKit's `HOST` needs an
//! entitlement); local OCI layouts and archives have no LLB source and are an
//! error; the static/dynamic ELF check of copies is kiln's own.

mod config;
mod emit;
mod marshal;
pub mod pb;
mod text;

pub use config::{BaseConfig, image_config};
pub use emit::{EmitError, Llb, Options, SourceFile, emit, op_digest};
pub use marshal::marshal_op;
pub use text::{DecodeError, Graph, GraphOp, to_text};

use prost::Message as _;

/// The binary form of a definition, as `buildctl debug dump-llb` reads it on
/// stdin and as the gateway's `Solve` carries it.
pub fn encode(def: &pb::Definition) -> Vec<u8> {
    def.encode_to_vec()
}

/// Parses the binary form of a definition.
pub fn decode(bytes: &[u8]) -> Result<pb::Definition, DecodeError> {
    pb::Definition::decode(bytes).map_err(|e| DecodeError::Definition {
        reason: e.to_string(),
    })
}
