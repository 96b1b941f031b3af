//! The copy file action: what a `COPY`/`ADD` or a Kilnfile `.copy(..)`
//! takes from an input and how it lands in the filesystem changed.
//!
//! The fields that came after the first release (`unpack`, `keep_owner`,
//! `follow_symlinks`) are encoded only when set, so every copy that does
//! not use them keeps the digest it had.

use serde::{Deserialize, Serialize};

use crate::canonical::{Canonical, Encoder};
use crate::op::{Chown, InputIndex};

fn not(b: &bool) -> bool {
    !b
}

/// Copies `src` of input `from` to `dest` of input 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAction {
    /// Input the files come from.
    pub from: InputIndex,
    pub src: String,
    pub dest: String,
    /// Owner of everything copied; `None` gives it to root (or, with
    /// `keep_owner`, leaves the source's owners).
    pub chown: Option<Chown>,
    pub chmod: Option<u32>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Skip the static/dynamic ELF check for what this copies.
    pub allow_dynamic: bool,
    /// A source file that is a tar archive (plain, gzip, bzip2, xz or
    /// zstd, told by content) is extracted into `dest` instead
    /// (Dockerfile `ADD`).
    #[serde(default, skip_serializing_if = "not")]
    pub unpack: bool,
    /// Without `chown`, the copies keep the uid and gid they have in the
    /// source (BuildKit's copy out of a stage or an image) instead of
    /// becoming root's.
    #[serde(default, skip_serializing_if = "not")]
    pub keep_owner: bool,
    /// A symlink named as `src` is followed (BuildKit's `FollowSymlinks`:
    /// the target's content is copied under the link's name); symlinks
    /// below a copied directory stay links either way.
    #[serde(default, skip_serializing_if = "not")]
    pub follow_symlinks: bool,
    /// A symbolic mode (`u+x,g-w`) applied to each copied entry's own
    /// mode ([`crate::SymbolicMode`]); `chmod` is `None` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod_symbolic: Option<String>,
}

impl CopyAction {
    /// A plain copy of `src` of input `from` to `dest`: no owner, mode or
    /// selection given.
    pub fn new(from: InputIndex, src: impl Into<String>, dest: impl Into<String>) -> CopyAction {
        CopyAction {
            from,
            src: src.into(),
            dest: dest.into(),
            chown: None,
            chmod: None,
            include: Vec::new(),
            exclude: Vec::new(),
            allow_dynamic: false,
            unpack: false,
            keep_owner: false,
            follow_symlinks: false,
            chmod_symbolic: None,
        }
    }

    /// The same copy reading from input `from`.
    pub fn with_from(self, from: InputIndex) -> CopyAction {
        CopyAction { from, ..self }
    }

    /// Whether the copies keep their source owners: asked for and not
    /// overridden by `chown`.
    pub fn keeps_owners(&self) -> bool {
        self.keep_owner && self.chown.is_none()
    }

    /// The mode an entry of mode `mode` gets: `chmod`, the symbolic mode
    /// applied to it, or its own.
    pub fn mode_for(&self, mode: u32, is_dir: bool) -> Result<u32, crate::ModeError> {
        if let Some(m) = self.chmod {
            return Ok(m);
        }
        match &self.chmod_symbolic {
            Some(s) => Ok(crate::SymbolicMode::parse(s)?.apply(mode, is_dir)),
            None => Ok(mode),
        }
    }

    /// A short description for progress and graph output:
    /// `#1:/src -> /dest (unpack)`.
    pub fn describe(&self) -> String {
        let mut s = format!("#{}:{} -> {}", self.from, self.src, self.dest);
        for flag in self.flags_set() {
            s.push_str(&format!(" ({flag})"));
        }
        s
    }

    /// The names of the boolean flags after the first release that are
    /// set, in their encoding order.
    fn flags_set(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.unpack, "unpack"),
            (self.keep_owner, "keep_owner"),
            (self.follow_symlinks, "follow_symlinks"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
    }
}

impl Canonical for CopyAction {
    fn encode(&self, e: &mut Encoder) {
        e.tag("copy");
        e.u64(self.from as u64);
        e.str(&self.src);
        e.str(&self.dest);
        e.opt(self.chown.as_ref());
        e.opt_u64(self.chmod.map(u64::from));
        e.strs(&self.include);
        e.strs(&self.exclude);
        e.bool(self.allow_dynamic);
        // Encoded only when set, so the digests of every other copy stay
        // as they were; no action's tag is one of these.
        for tag in self.flags_set() {
            e.tag(tag);
        }
        if let Some(m) = &self.chmod_symbolic {
            e.tag("chmod_symbolic");
            e.str(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(a: &CopyAction) -> Vec<u8> {
        let mut e = Encoder::new();
        a.encode(&mut e);
        e.into_bytes()
    }

    #[test]
    fn new_flags_change_the_encoding_only_when_set() {
        let plain = CopyAction::new(1, "/a", "/b");
        let keep = CopyAction {
            keep_owner: true,
            ..plain.clone()
        };
        let follow = CopyAction {
            follow_symlinks: true,
            ..plain.clone()
        };
        assert_ne!(digest(&plain), digest(&keep));
        assert_ne!(digest(&plain), digest(&follow));
        assert_ne!(digest(&keep), digest(&follow));
        // The encoding of a copy without them is the first release's.
        let mut e = Encoder::new();
        e.tag("copy");
        e.u64(1);
        e.str("/a");
        e.str("/b");
        e.bool(false);
        e.bool(false);
        e.strs(&[]);
        e.strs(&[]);
        e.bool(false);
        assert_eq!(digest(&plain), e.into_bytes());
    }

    #[test]
    fn chown_overrides_keep_owner() {
        let mut a = CopyAction {
            keep_owner: true,
            ..CopyAction::new(1, "/a", "/b")
        };
        assert!(a.keeps_owners());
        a.chown = Some(Chown {
            user: "1".into(),
            group: None,
        });
        assert!(!a.keeps_owners());
    }

    #[test]
    fn json_omits_unset_flags() {
        let a = CopyAction::new(1, "/a", "/b");
        let j = serde_json::to_string(&a).unwrap();
        assert!(!j.contains("keep_owner") && !j.contains("unpack"), "{j}");
    }
}
