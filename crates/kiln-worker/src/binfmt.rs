//! Whether this machine can execute a platform's programs: natively, or
//! through a binfmt_misc handler such as qemu-user-static's `qemu-aarch64`
//! (the kernel's admin guide, `binfmt-misc.rst`).
//!
//! A handler is found by what it matches, not by its name: the entries
//! under `/proc/sys/fs/binfmt_misc` are read and each enabled one's magic
//! and mask are tried on the ELF header of an executable of the platform
//! ([`crate::elfcheck::elf_header`]). A step runs inside the sandbox's mount
//! namespace, where the handler's interpreter path does not exist: only a
//! handler registered with the `F` (fix-binary) flag, whose interpreter the
//! kernel opened at registration, works there.

use std::path::{Path, PathBuf};

use kiln_types::Platform;

/// Where binfmt_misc is mounted.
pub const ROOT: &str = "/proc/sys/fs/binfmt_misc";

/// One registered handler, as its entry file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The entry's name, e.g. `qemu-aarch64`.
    pub name: String,
    pub enabled: bool,
    pub interpreter: PathBuf,
    /// The flag letters (`P`, `O`, `C`, `F`).
    pub flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Handler {
    /// Parses an entry file (`enabled`, `interpreter ...`, `flags: ...`,
    /// `offset N`, `magic HEX`, `mask HEX`); `None` for an extension entry
    /// (`extension .jar`) or text that is not an entry.
    pub fn parse(name: &str, text: &str) -> Option<Handler> {
        let mut lines = text.lines();
        let enabled = match lines.next()? {
            "enabled" => true,
            "disabled" => false,
            _ => return None,
        };
        let mut h = Handler {
            name: name.to_string(),
            enabled,
            interpreter: PathBuf::new(),
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "interpreter" => h.interpreter = PathBuf::from(value),
                "flags:" => h.flags = value.to_string(),
                "offset" => h.offset = value.parse().ok()?,
                "magic" => h.magic = hex::decode(value).ok()?,
                "mask" => h.mask = hex::decode(value).ok()?,
                _ => {}
            }
        }
        (!h.magic.is_empty()).then_some(h)
    }

    /// Whether the kernel opened the interpreter at registration (`F`), so
    /// it runs programs inside other mount namespaces too.
    pub fn fix_binary(&self) -> bool {
        self.flags.contains('F')
    }

    /// Whether a file starting with `header` is run by this handler.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(bytes) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        bytes.iter().enumerate().all(|(i, b)| {
            let m = self.mask.get(i).copied().unwrap_or(0xff);
            b & m == self.magic[i] & m
        })
    }
}

/// How a platform's programs run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Execution {
    /// This machine's own architecture (or one its CPU runs, 386 on amd64).
    Native,
    /// Through `handler`, registered with the `F` flag.
    Emulated(Handler),
    /// A handler matches but lacks the `F` flag: its interpreter cannot be
    /// found inside the sandbox.
    NoFixBinary(Handler),
    /// A handler matches but is disabled.
    Disabled(Handler),
    /// Nothing runs them: no handler, binfmt_misc not mounted, another OS,
    /// or an architecture kiln has no ELF header for.
    Unavailable,
}

/// How `p`'s programs run on this machine, from the handlers under [`ROOT`].
pub fn execution(p: &Platform) -> Execution {
    execution_in(Path::new(ROOT), p)
}

/// [`execution`] with the handlers under `dir`.
pub fn execution_in(dir: &Path, p: &Platform) -> Execution {
    let p = p.normalized();
    if p.os != "linux" {
        return Execution::Unavailable;
    }
    let host = Platform::host().architecture;
    if p.architecture == host || (host == "amd64" && p.architecture == "386") {
        return Execution::Native;
    }
    let Some(header) = crate::elfcheck::elf_header(&p.architecture) else {
        return Execution::Unavailable;
    };
    let mut handlers: Vec<Handler> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                return None;
            }
            Handler::parse(&name, &std::fs::read_to_string(e.path()).ok()?)
        })
        .filter(|h| h.matches(&header))
        .collect();
    // the first by name, so the answer does not depend on directory order
    handlers.sort_by(|a, b| a.name.cmp(&b.name));
    let pick = |f: &dyn Fn(&Handler) -> bool| handlers.iter().find(|h| f(h)).cloned();
    if let Some(h) = pick(&|h| h.enabled && h.fix_binary()) {
        Execution::Emulated(h)
    } else if let Some(h) = pick(&|h| h.enabled) {
        Execution::NoFixBinary(h)
    } else if let Some(h) = pick(&|_| true) {
        Execution::Disabled(h)
    } else {
        Execution::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian bookworm's qemu-user-static entry, as the kernel shows it.
    const QEMU_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn foreign() -> &'static str {
        if Platform::host().architecture == "arm64" {
            "amd64"
        } else {
            "arm64"
        }
    }

    #[test]
    fn parses_debians_qemu_entry() {
        let h = Handler::parse("qemu-aarch64", QEMU_AARCH64).unwrap();
        assert!(h.enabled);
        assert!(h.fix_binary());
        assert_eq!(
            h.interpreter,
            Path::new("/usr/libexec/qemu-binfmt/aarch64-binfmt-P")
        );
        let arm64 = crate::elfcheck::elf_header("arm64").unwrap();
        let amd64 = crate::elfcheck::elf_header("amd64").unwrap();
        assert!(h.matches(&arm64));
        assert!(!h.matches(&amd64));
        // shared objects and PIEs (ET_DYN) too: the mask drops e_type's low bit
        let mut dyn_ = arm64;
        dyn_[16] = 3;
        assert!(h.matches(&dyn_));
        // an extension entry and junk are no handlers
        assert_eq!(
            Handler::parse(
                "jar",
                "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"
            ),
            None
        );
        assert_eq!(Handler::parse("x", "hello\n"), None);
        assert_eq!(Handler::parse("x", "enabled\nmagic zz\n"), None);
    }

    #[test]
    fn execution_from_a_directory_of_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = Platform::parse(&format!("linux/{}", foreign())).unwrap();
        let entry = |flags: &str, state: &str| {
            let (magic, mask) = match foreign() {
                "arm64" => (
                    "7f454c460201010000000000000000000200b700",
                    "ffffffffffffff00fffffffffffffffffeffffff",
                ),
                _ => (
                    "7f454c4602010100000000000000000002003e00",
                    "fffffffffffefe00fffffffffffffffffeffffff",
                ),
            };
            format!(
                "{state}\ninterpreter /usr/bin/qemu-static\nflags: {flags}\noffset 0\nmagic {magic}\nmask {mask}\n"
            )
        };
        assert_eq!(
            execution_in(dir.path(), &Platform::host()),
            Execution::Native
        );
        assert_eq!(execution_in(dir.path(), &p), Execution::Unavailable);
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        std::fs::write(dir.path().join("emu"), entry("P", "disabled")).unwrap();
        assert!(matches!(execution_in(dir.path(), &p), Execution::Disabled(h) if h.name == "emu"));
        std::fs::write(dir.path().join("emu"), entry("P", "enabled")).unwrap();
        assert!(matches!(
            execution_in(dir.path(), &p),
            Execution::NoFixBinary(_)
        ));
        std::fs::write(dir.path().join("emu"), entry("PF", "enabled")).unwrap();
        assert!(matches!(execution_in(dir.path(), &p), Execution::Emulated(h) if h.name == "emu"));
        // a handler for another machine does not count
        let s390x = Platform::parse("linux/s390x").unwrap();
        assert_eq!(execution_in(dir.path(), &s390x), Execution::Unavailable);
        assert_eq!(
            execution_in(dir.path(), &Platform::parse("windows/amd64").unwrap()),
            Execution::Unavailable
        );
    }
}
