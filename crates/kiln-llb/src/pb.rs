//! BuildKit's LLB wire format, generated at build time from the vendored
//! `proto/github.com/moby/buildkit/solver/pb/ops.proto` (BuildKit v0.32.2,
//! package `pb`); see `build.rs`.
//!
//! Marshal an [`Op`] with [`crate::marshal_op`], not `encode_to_vec`: only
//! the former writes Go's field order, which the op's digest depends on.

#![allow(clippy::all, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/pb.rs"));
