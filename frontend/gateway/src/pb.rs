//! The messages of BuildKit's gateway API (`frontend/gateway/pb/gateway.proto`,
//! package `moby.buildkit.v1.frontend`) that the frontend uses, plus
//! `google.rpc.Status` and BuildKit's `errdefs.Source` error detail. Written
//! by hand as prost messages with the published field numbers; fields the
//! frontend never reads are left out (prost skips them when decoding).

use std::collections::BTreeMap;

pub use kiln_llb::pb::{Definition, Platform, Position, Range, SourceInfo};

/// The gRPC service BuildKit serves to frontends over stdio.
pub const SERVICE: &str = "moby.buildkit.v1.frontend.LLBBridge";

#[derive(Clone, PartialEq, prost::Message)]
pub struct PingRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PongResponse {
    #[prost(message, repeated, tag = "1")]
    pub frontend_api_caps: Vec<ApiCap>,
    #[prost(message, repeated, tag = "2")]
    pub llb_caps: Vec<ApiCap>,
    #[prost(message, repeated, tag = "3")]
    pub workers: Vec<WorkerRecord>,
}

/// `moby.buildkit.v1.apicaps.APICap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApiCap {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(bool, tag = "2")]
    pub enabled: bool,
    #[prost(bool, tag = "3")]
    pub deprecated: bool,
    #[prost(string, tag = "4")]
    pub disabled_reason: String,
    #[prost(string, tag = "5")]
    pub disabled_reason_msg: String,
    #[prost(string, tag = "6")]
    pub disabled_alternative: String,
}

/// `moby.buildkit.v1.types.WorkerRecord` (the fields used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    #[prost(message, repeated, tag = "3")]
    pub platforms: Vec<Platform>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheOptionsEntry {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SolveRequest {
    #[prost(message, optional, tag = "1")]
    pub definition: Option<Definition>,
    #[prost(string, tag = "2")]
    pub frontend: String,
    #[prost(btree_map = "string, string", tag = "3")]
    pub frontend_opt: BTreeMap<String, String>,
    #[prost(bool, tag = "5")]
    pub allow_result_return: bool,
    #[prost(bool, tag = "6")]
    pub allow_result_array_ref: bool,
    #[prost(bool, tag = "10")]
    pub r#final: bool,
    #[prost(bytes = "vec", tag = "11")]
    pub exporter_attr: Vec<u8>,
    #[prost(message, repeated, tag = "12")]
    pub cache_imports: Vec<CacheOptionsEntry>,
    #[prost(bool, tag = "14")]
    pub evaluate: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SolveResponse {
    /// Deprecated: servers without result return answer with the ref here.
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(message, optional, tag = "3")]
    pub result: Option<BuildResult>,
}

/// `Result` of gateway.proto (renamed: it is not a Rust `Result`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BuildResult {
    #[prost(oneof = "build_result::Result", tags = "1, 2, 3, 4")]
    pub result: Option<build_result::Result>,
    #[prost(btree_map = "string, bytes", tag = "10")]
    pub metadata: BTreeMap<String, Vec<u8>>,
}

pub mod build_result {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Result {
        #[prost(string, tag = "1")]
        RefDeprecated(String),
        #[prost(message, tag = "2")]
        RefsDeprecated(super::RefMapDeprecated),
        #[prost(message, tag = "3")]
        Ref(super::Ref),
        #[prost(message, tag = "4")]
        Refs(super::RefMap),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RefMapDeprecated {
    #[prost(btree_map = "string, string", tag = "1")]
    pub refs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ref {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(message, optional, tag = "2")]
    pub def: Option<Definition>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RefMap {
    #[prost(btree_map = "string, message", tag = "1")]
    pub refs: BTreeMap<String, Ref>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadFileRequest {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub file_path: String,
    #[prost(message, optional, tag = "3")]
    pub range: Option<FileRange>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileRange {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(int64, tag = "2")]
    pub length: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadFileResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResolveImageConfigRequest {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(message, optional, tag = "2")]
    pub platform: Option<Platform>,
    #[prost(string, tag = "3")]
    pub resolve_mode: String,
    #[prost(string, tag = "4")]
    pub log_name: String,
    #[prost(int32, tag = "5")]
    pub resolver_type: i32,
    #[prost(string, tag = "6")]
    pub session_id: String,
    #[prost(string, tag = "7")]
    pub store_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResolveImageConfigResponse {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(bytes = "vec", tag = "2")]
    pub config: Vec<u8>,
    #[prost(string, tag = "3")]
    pub r#ref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReturnRequest {
    #[prost(message, optional, tag = "1")]
    pub result: Option<BuildResult>,
    #[prost(message, optional, tag = "2")]
    pub error: Option<Status>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReturnResponse {}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// BuildKit's `errdefs.Source` error detail: the file and the ranges an
/// error is about; BuildKit's clients print the lines with `>>>` markers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorSource {
    #[prost(message, optional, tag = "1")]
    pub info: Option<SourceInfo>,
    #[prost(message, repeated, tag = "2")]
    pub ranges: Vec<Range>,
}

/// The `Any` type URL of [`ErrorSource`].
pub const ERROR_SOURCE_TYPE: &str = "type.googleapis.com/errdefs.Source";
