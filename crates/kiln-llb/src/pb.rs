//! BuildKit's LLB wire format (`solver/pb/ops.proto`, package `pb`), written
//! by hand as prost messages so no `protoc` is needed.
//!
//! Field numbers, oneofs and enum values follow the published ops.proto of
//! BuildKit v0.17+ (the version with `FileActionSymlink`). Maps are
//! `BTreeMap`s so keys are marshalled sorted, as Go's deterministic marshal
//! does: an op's digest is the sha256 of these bytes.

use std::collections::BTreeMap;

/// A vertex of the LLB DAG.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<Input>,
    #[prost(oneof = "op::Kind", tags = "2, 3, 4, 6, 7")]
    pub op: Option<op::Kind>,
    #[prost(message, optional, tag = "10")]
    pub platform: Option<Platform>,
    #[prost(message, optional, tag = "11")]
    pub constraints: Option<WorkerConstraints>,
}

pub mod op {
    /// The `op` oneof (`BuildOp`, tag 5, is experimental and never emitted).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "2")]
        Exec(super::ExecOp),
        #[prost(message, tag = "3")]
        Source(super::SourceOp),
        #[prost(message, tag = "4")]
        File(super::FileOp),
        #[prost(message, tag = "6")]
        Merge(super::MergeOp),
        #[prost(message, tag = "7")]
        Diff(super::DiffOp),
    }
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Platform {
    #[prost(string, tag = "1")]
    pub architecture: String,
    #[prost(string, tag = "2")]
    pub os: String,
    #[prost(string, tag = "3")]
    pub variant: String,
    #[prost(string, tag = "4")]
    pub os_version: String,
    #[prost(string, repeated, tag = "5")]
    pub os_features: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Input {
    /// Digest of the marshalled input op.
    #[prost(string, tag = "1")]
    pub digest: String,
    /// Output index of the input op.
    #[prost(int64, tag = "2")]
    pub index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecOp {
    #[prost(message, optional, tag = "1")]
    pub meta: Option<Meta>,
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    #[prost(enumeration = "NetMode", tag = "3")]
    pub network: i32,
    #[prost(enumeration = "SecurityMode", tag = "4")]
    pub security: i32,
    #[prost(message, repeated, tag = "5")]
    pub secretenv: Vec<SecretEnv>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    #[prost(string, repeated, tag = "1")]
    pub args: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub env: Vec<String>,
    #[prost(string, tag = "3")]
    pub cwd: String,
    #[prost(string, tag = "4")]
    pub user: String,
    #[prost(string, tag = "7")]
    pub hostname: String,
    #[prost(message, repeated, tag = "9")]
    pub ulimit: Vec<Ulimit>,
    #[prost(bool, tag = "11")]
    pub remove_mount_stubs_recursive: bool,
    #[prost(int32, repeated, tag = "12")]
    pub valid_exit_codes: Vec<i32>,
}

/// A resource limit of the step's process (`setrlimit`), e.g. `nproc`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Ulimit {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub soft: i64,
    #[prost(int64, tag = "3")]
    pub hard: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NetMode {
    /// The worker's sandbox network (BuildKit's default).
    Unset = 0,
    /// The host network; needs the `network.host` entitlement.
    Host = 1,
    None = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SecurityMode {
    Sandbox = 0,
    Insecure = 1,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SecretEnv {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bool, tag = "3")]
    pub optional: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(int64, tag = "1")]
    pub input: i64,
    #[prost(string, tag = "2")]
    pub selector: String,
    #[prost(string, tag = "3")]
    pub dest: String,
    #[prost(int64, tag = "4")]
    pub output: i64,
    #[prost(bool, tag = "5")]
    pub readonly: bool,
    #[prost(enumeration = "MountType", tag = "6")]
    pub mount_type: i32,
    #[prost(message, optional, tag = "19")]
    pub tmpfs_opt: Option<TmpfsOpt>,
    #[prost(message, optional, tag = "20")]
    pub cache_opt: Option<CacheOpt>,
    #[prost(message, optional, tag = "21")]
    pub secret_opt: Option<SecretOpt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MountType {
    Bind = 0,
    Secret = 1,
    Ssh = 2,
    Cache = 3,
    Tmpfs = 4,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TmpfsOpt {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct CacheOpt {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(enumeration = "CacheSharingOpt", tag = "2")]
    pub sharing: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CacheSharingOpt {
    Shared = 0,
    Private = 1,
    Locked = 2,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SecretOpt {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub uid: u32,
    #[prost(uint32, tag = "3")]
    pub gid: u32,
    #[prost(uint32, tag = "4")]
    pub mode: u32,
    #[prost(bool, tag = "5")]
    pub optional: bool,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SourceOp {
    /// `docker-image://REF`, `local://NAME`, ...
    #[prost(string, tag = "1")]
    pub identifier: String,
    /// Keys as in BuildKit's `solver/pb/attr.go`.
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OpMetadata {
    #[prost(bool, tag = "1")]
    pub ignore_cache: bool,
    /// `llb.customname` is the progress label.
    #[prost(btree_map = "string, string", tag = "2")]
    pub description: BTreeMap<String, String>,
    #[prost(btree_map = "string, bool", tag = "5")]
    pub caps: BTreeMap<String, bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Source {
    #[prost(btree_map = "string, message", tag = "1")]
    pub locations: BTreeMap<String, Locations>,
    #[prost(message, repeated, tag = "2")]
    pub infos: Vec<SourceInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Locations {
    #[prost(message, repeated, tag = "1")]
    pub locations: Vec<Location>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceInfo {
    #[prost(string, tag = "1")]
    pub filename: String,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    pub definition: Option<Definition>,
    #[prost(string, tag = "4")]
    pub language: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(int32, tag = "1")]
    pub source_index: i32,
    #[prost(message, repeated, tag = "2")]
    pub ranges: Vec<Range>,
}

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Range {
    #[prost(message, optional, tag = "1")]
    pub start: Option<Position>,
    #[prost(message, optional, tag = "2")]
    pub end: Option<Position>,
}

/// 1-based line, 0-based character, as BuildKit's frontends send them.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Position {
    #[prost(int32, tag = "1")]
    pub line: i32,
    #[prost(int32, tag = "2")]
    pub character: i32,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct WorkerConstraints {
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
}

/// A whole LLB graph: marshalled ops (the last one, with only an input, is
/// the terminal that names the result) and metadata keyed by op digest.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definition {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub def: Vec<Vec<u8>>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub metadata: BTreeMap<String, OpMetadata>,
    #[prost(message, optional, tag = "3")]
    pub source: Option<Source>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOp {
    #[prost(message, repeated, tag = "2")]
    pub actions: Vec<FileAction>,
}

/// `input`/`secondary_input` index the op's inputs, or (from `inputs.len()`
/// on) the outputs of earlier actions; -1 is scratch. `output` is -1 except
/// for the action whose result is the op's output.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileAction {
    #[prost(int64, tag = "1")]
    pub input: i64,
    #[prost(int64, tag = "2")]
    pub secondary_input: i64,
    #[prost(int64, tag = "3")]
    pub output: i64,
    #[prost(oneof = "file_action::Action", tags = "4, 5, 6, 7, 8")]
    pub action: Option<file_action::Action>,
}

pub mod file_action {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Action {
        #[prost(message, tag = "4")]
        Copy(super::FileActionCopy),
        #[prost(message, tag = "5")]
        Mkfile(super::FileActionMkFile),
        #[prost(message, tag = "6")]
        Mkdir(super::FileActionMkDir),
        #[prost(message, tag = "7")]
        Rm(super::FileActionRm),
        #[prost(message, tag = "8")]
        Symlink(super::FileActionSymlink),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionCopy {
    #[prost(string, tag = "1")]
    pub src: String,
    #[prost(string, tag = "2")]
    pub dest: String,
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    /// Permission bits, -1 to keep the source's.
    #[prost(int32, tag = "4")]
    pub mode: i32,
    #[prost(bool, tag = "5")]
    pub follow_symlink: bool,
    #[prost(bool, tag = "6")]
    pub dir_copy_contents: bool,
    #[prost(bool, tag = "7")]
    pub attempt_unpack_docker_compatibility: bool,
    #[prost(bool, tag = "8")]
    pub create_dest_path: bool,
    #[prost(bool, tag = "9")]
    pub allow_wildcard: bool,
    #[prost(bool, tag = "10")]
    pub allow_empty_wildcard: bool,
    /// Unix nanoseconds; -1 leaves the time to BuildKit.
    #[prost(int64, tag = "11")]
    pub timestamp: i64,
    #[prost(string, repeated, tag = "12")]
    pub include_patterns: Vec<String>,
    #[prost(string, repeated, tag = "13")]
    pub exclude_patterns: Vec<String>,
    #[prost(bool, tag = "14")]
    pub always_replace_existing_dest_paths: bool,
    #[prost(string, tag = "15")]
    pub mode_str: String,
    #[prost(string, repeated, tag = "16")]
    pub required_paths: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkFile {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(int32, tag = "2")]
    pub mode: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionSymlink {
    /// What the link points at.
    #[prost(string, tag = "1")]
    pub oldpath: String,
    /// Where the link is created.
    #[prost(string, tag = "2")]
    pub newpath: String,
    #[prost(message, optional, tag = "3")]
    pub owner: Option<ChownOpt>,
    #[prost(int64, tag = "4")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkDir {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(int32, tag = "2")]
    pub mode: i32,
    #[prost(bool, tag = "3")]
    pub make_parents: bool,
    #[prost(message, optional, tag = "4")]
    pub owner: Option<ChownOpt>,
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FileActionRm {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(bool, tag = "2")]
    pub allow_not_found: bool,
    #[prost(bool, tag = "3")]
    pub allow_wildcard: bool,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChownOpt {
    #[prost(message, optional, tag = "1")]
    pub user: Option<UserOpt>,
    #[prost(message, optional, tag = "2")]
    pub group: Option<UserOpt>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UserOpt {
    #[prost(oneof = "user_opt::User", tags = "1, 2")]
    pub user: Option<user_opt::User>,
}

pub mod user_opt {
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum User {
        #[prost(message, tag = "1")]
        ByName(super::NamedUserOpt),
        #[prost(uint32, tag = "2")]
        ById(u32),
    }
}

/// A user or group name, resolved in the `/etc/passwd` of input `input`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct NamedUserOpt {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub input: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MergeInput {
    #[prost(int64, tag = "1")]
    pub input: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MergeOp {
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<MergeInput>,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LowerDiffInput {
    #[prost(int64, tag = "1")]
    pub input: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UpperDiffInput {
    #[prost(int64, tag = "1")]
    pub input: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct DiffOp {
    #[prost(message, optional, tag = "1")]
    pub lower: Option<LowerDiffInput>,
    #[prost(message, optional, tag = "2")]
    pub upper: Option<UpperDiffInput>,
}
