//! How the files of an overlay upper directory map to OCI layer entries.
//!
//! Kernel overlayfs records a deleted lower file as a 0/0 character device
//! (or, since Linux 6.7, as an empty file with an `overlay.whiteout` xattr)
//! and an opaque directory with the `overlay.opaque` xattr, in the `trusted.`
//! namespace or, with `userxattr` inside a user namespace, the `user.` one
//! (Documentation/filesystems/overlayfs.rst). fuse-overlayfs uses the same
//! forms, or `.wh.` files and `user.fuseoverlayfs.opaque` when it cannot make
//! a device node. The OCI image spec (layer.md, "Whiteouts") wants `.wh.NAME`
//! and `.wh..wh..opq` entries instead. This module is the pure decision; the
//! writer feeds it facts read from the filesystem.

/// Prefix of an OCI whiteout entry.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Which xattr namespace an overlay mount uses for its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayXattr {
    /// `user.overlay.*`: overlay mounted with `userxattr` (inside a user namespace)
    User,
    /// `trusted.overlay.*`: overlay mounted by real root
    Trusted,
}

impl OverlayXattr {
    pub fn opaque_name(self) -> &'static str {
        match self {
            OverlayXattr::User => "user.overlay.opaque",
            OverlayXattr::Trusted => "trusted.overlay.opaque",
        }
    }
}

/// What one file of an upper directory becomes in the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryClass {
    /// an ordinary entry, written as it is
    Plain,
    /// a deleted lower file: written as `.wh.NAME`, nothing else
    Whiteout,
    /// a directory hiding its lower contents: written, followed by an opaque marker
    OpaqueDir,
}

/// The facts [`classify`] needs about one file.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub is_dir: bool,
    pub is_file: bool,
    pub is_char_device: bool,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub size: u64,
    /// the file's extended attributes, as (name, value)
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

fn xattr<'a>(xattrs: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    xattrs
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

/// True when `name=value` marks an overlay directory as opaque, in any of
/// the forms kernel overlayfs or fuse-overlayfs write. The value `x` of the
/// kernel's `overlay.opaque` means "has xattr whiteouts", not opaque.
pub fn is_opaque_xattr(name: &[u8], value: &[u8]) -> bool {
    matches!(
        name,
        b"trusted.overlay.opaque" | b"user.overlay.opaque" | b"user.fuseoverlayfs.opaque"
    ) && value == b"y"
}

/// Classifies one file of an overlay upper directory.
pub fn classify(f: &Facts<'_>) -> EntryClass {
    if f.is_char_device && f.rdev_major == 0 && f.rdev_minor == 0 {
        return EntryClass::Whiteout;
    }
    if f.is_file
        && f.size == 0
        && (xattr(f.xattrs, "trusted.overlay.whiteout").is_some()
            || xattr(f.xattrs, "user.overlay.whiteout").is_some())
    {
        return EntryClass::Whiteout;
    }
    if f.is_dir && f.xattrs.iter().any(|(n, v)| is_opaque_xattr(n, v)) {
        return EntryClass::OpaqueDir;
    }
    EntryClass::Plain
}

/// Whether an xattr belongs in a layer. File capabilities
/// (`security.capability`, e.g. on ping) and user xattrs do; overlay and
/// fuse-overlayfs bookkeeping, `trusted.*`, SELinux labels and ACLs (which
/// a layer cannot carry portably) do not.
pub fn keep_xattr(name: &[u8]) -> bool {
    if name == b"security.capability" {
        return true;
    }
    name.starts_with(b"user.")
        && !name.starts_with(b"user.overlay.")
        && !name.starts_with(b"user.fuseoverlayfs.")
        && !name.starts_with(b"user.containers.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Facts<'_> {
        Facts {
            is_dir: false,
            is_file: false,
            is_char_device: false,
            rdev_major: 0,
            rdev_minor: 0,
            size: 0,
            xattrs,
        }
    }

    fn x(n: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (n.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn decisions() {
        // (description, facts, expected)
        let none: Vec<(Vec<u8>, Vec<u8>)> = vec![];
        let opq_user = vec![x("user.overlay.opaque", "y")];
        let opq_trusted = vec![x("trusted.overlay.opaque", "y")];
        let opq_fuse = vec![x("user.fuseoverlayfs.opaque", "y")];
        let opq_x = vec![x("user.overlay.opaque", "x")];
        let xwh = vec![x("user.overlay.whiteout", "")];
        let cases: Vec<(&str, Facts<'_>, EntryClass)> = vec![
            (
                "char 0/0 is a whiteout",
                Facts {
                    is_char_device: true,
                    ..facts(&none)
                },
                EntryClass::Whiteout,
            ),
            (
                "char 1/3 (null) is a device",
                Facts {
                    is_char_device: true,
                    rdev_major: 1,
                    rdev_minor: 3,
                    ..facts(&none)
                },
                EntryClass::Plain,
            ),
            (
                "char 0/1 is a device",
                Facts {
                    is_char_device: true,
                    rdev_minor: 1,
                    ..facts(&none)
                },
                EntryClass::Plain,
            ),
            (
                "dir with user.overlay.opaque=y",
                Facts {
                    is_dir: true,
                    ..facts(&opq_user)
                },
                EntryClass::OpaqueDir,
            ),
            (
                "dir with trusted.overlay.opaque=y",
                Facts {
                    is_dir: true,
                    ..facts(&opq_trusted)
                },
                EntryClass::OpaqueDir,
            ),
            (
                "dir with fuse-overlayfs opaque",
                Facts {
                    is_dir: true,
                    ..facts(&opq_fuse)
                },
                EntryClass::OpaqueDir,
            ),
            (
                "opaque=x only means xattr whiteouts inside",
                Facts {
                    is_dir: true,
                    ..facts(&opq_x)
                },
                EntryClass::Plain,
            ),
            (
                "empty file with overlay.whiteout xattr",
                Facts {
                    is_file: true,
                    ..facts(&xwh)
                },
                EntryClass::Whiteout,
            ),
            (
                "non-empty file with the xattr is data",
                Facts {
                    is_file: true,
                    size: 3,
                    ..facts(&xwh)
                },
                EntryClass::Plain,
            ),
            (
                "plain dir",
                Facts {
                    is_dir: true,
                    ..facts(&none)
                },
                EntryClass::Plain,
            ),
        ];
        for (what, f, want) in cases {
            assert_eq!(classify(&f), want, "{what}");
        }
    }

    #[test]
    fn xattr_policy() {
        assert!(keep_xattr(b"security.capability"));
        assert!(keep_xattr(b"user.mime_type"));
        assert!(!keep_xattr(b"user.overlay.opaque"));
        assert!(!keep_xattr(b"user.fuseoverlayfs.override_stat"));
        assert!(!keep_xattr(b"trusted.overlay.origin"));
        assert!(!keep_xattr(b"security.selinux"));
        assert!(!keep_xattr(b"system.posix_acl_access"));
    }
}
