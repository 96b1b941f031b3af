//! Layer tars for kiln: a deterministic writer that turns a directory tree
//! (a plain root filesystem or an overlay upper directory) into an
//! uncompressed OCI layer tar, and a confined reader that applies a layer tar
//! to a directory without ever writing outside it.
//!
//! Compression and digests are the caller's job: [`write_tar`] writes to any
//! [`std::io::Write`], [`write_tar_chunks`] hands whole chunk buffers to a
//! [`ChunkSink`] (a compression pipeline takes them without a copy), and
//! [`apply_tar`] reads from any [`std::io::Read`].
//!
//! Confinement is enforced by the kernel, not by string checks: every path of
//! an entry is resolved with openat2(2) `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS` relative to the target, and the final component is
//! created with `*at` calls that never follow a symlink.

mod apply;
mod idmap;
mod sparse;
mod whiteout;
mod write;

pub use apply::{
    ApplyError, ApplyOptions, ApplySummary, DEFAULT_MAX_SIZE, MAX_SIZE_ENV, Ownership,
    SizeLimitError, Skipped, WhiteoutMode, apply_tar, check_max_size_env, max_size_from_env,
};
pub use idmap::{IdMapping, IdRange, IdRangeError};
pub use whiteout::{
    EntryClass, Facts, OPAQUE_MARKER, OverlayXattr, WHITEOUT_PREFIX, classify, is_opaque_xattr,
    keep_xattr,
};
pub use write::{
    ChunkSink, EntryOwner, Owners, WriteError, WriteOptions, WriteSummary, write_tar,
    write_tar_chunks, write_tar_owned,
};
