//! An op's bytes in the field order of Go's deterministic marshal.
//!
//! BuildKit re-marshals every op it receives (`proto.MarshalOptions{
//! Deterministic: true}`) and digests those bytes, so kiln's bytes must be
//! the same or the digests the definition's metadata and source locations
//! are keyed by match nothing. Go writes a message's plain fields by field
//! number and its oneofs after them; prost writes a oneof where its lowest
//! field number falls. For `Op` that puts `op` (2-8) before `platform` (10)
//! and `constraints` (11), so `Op` is written here field by field. Every
//! nested message is prost's own encoding: `build.rs` checks that no other
//! message of ops.proto has a oneof numbered below a plain field.

use prost::Message as _;
use prost::encoding::message;

use crate::pb;

/// The bytes of `op` as BuildKit marshals them; its digest is
/// [`crate::op_digest`] of these.
pub fn marshal_op(op: &pb::Op) -> Vec<u8> {
    // Destructured so that a field a new schema adds fails to compile here
    // instead of going missing from the bytes.
    let pb::Op {
        inputs,
        op: kind,
        platform,
        constraints,
    } = op;
    let mut buf = Vec::with_capacity(op.encoded_len());
    for input in inputs {
        message::encode(1, input, &mut buf);
    }
    if let Some(p) = platform {
        message::encode(10, p, &mut buf);
    }
    if let Some(c) = constraints {
        message::encode(11, c, &mut buf);
    }
    if let Some(k) = kind {
        k.encode(&mut buf);
    }
    buf
}
