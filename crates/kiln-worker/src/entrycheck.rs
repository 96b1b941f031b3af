//! The final image's command is checked before anything is exported: its
//! entrypoint (or, without one, its cmd) must resolve in the image, through
//! `PATH` and symlinks, to an executable file whose interpreter exists (the
//! ELF `PT_INTERP` loader, or the program of a `#!` line). Otherwise the
//! image builds fine and fails at `docker run` with `exec: "python3":
//! executable file not found in $PATH` or a baffling `no such file or
//! directory`, although kiln knows every file in it.
//!
//! The layers are read once into an index of the merged filesystem
//! ([`Index`]: whiteouts and opaque directories applied, the first bytes of
//! executable files kept); [`resolve`] then follows paths as the kernel
//! does. A verdict is remembered per image (`entry-check` records), so a
//! rebuild that produced the same image reads nothing.

use std::collections::BTreeMap;
use std::io::Read;

use kiln_oci::{Image, Store};

/// How much of an executable file is kept: an ELF file's program headers
/// and `PT_INTERP` string, or a `#!` line, are well inside it.
const HEAD: usize = 4096;
/// Symlinks followed in one resolution before giving up (the kernel's
/// limit, path_resolution(7)).
const MAX_LINKS: usize = 40;
/// The `PATH` of an image that sets none (Docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum EntryCheckError {
    #[error("the image's {what} `{program}` is not in the image: not found in PATH `{path}`")]
    NotInPath {
        what: &'static str,
        program: String,
        path: String,
    },
    #[error("the image's {what} `{program}` does not exist in the image")]
    Missing { what: &'static str, program: String },
    #[error("the image's {what} `{program}` is {found}, not an executable file")]
    NotExecutable {
        what: &'static str,
        program: String,
        found: String,
    },
    #[error("the image's {what} `{program}` needs `{interpreter}`, which the image does not have")]
    NoInterpreter {
        what: &'static str,
        program: String,
        interpreter: String,
    },
    #[error(
        "the image's {what} `{program}`{} is built for {found}, but the image is for {platform}: it would fail with \"exec format error\"",
        resolved_as(program, file)
    )]
    WrongMachine {
        what: &'static str,
        program: String,
        /// The file it resolved to.
        file: String,
        /// The file's architecture (GOARCH).
        found: String,
        platform: Box<kiln_types::Platform>,
    },
    #[error("cannot open a layer of the image")]
    Open(#[source] Box<kiln_oci::FlattenError>),
    #[error("cannot read layer {digest} of the image")]
    Layer {
        digest: String,
        #[source]
        source: std::io::Error,
    },
}

/// ` (`file`)` when the program resolved to another path.
fn resolved_as(program: &str, file: &str) -> String {
    if program == file {
        String::new()
    } else {
        format!(" (`{file}`)")
    }
}

impl EntryCheckError {
    /// What to do about it.
    pub fn help(&self) -> String {
        match self {
            EntryCheckError::NotInPath { program, .. } | EntryCheckError::Missing { program, .. } => format!(
                "copy `{program}` into the final image (a static base has no shell and no interpreters: copy the program itself, or install what it needs with a package set), or point the command at a file that is there"
            ),
            EntryCheckError::NotExecutable { .. } => {
                "give the file an executable mode (`chmod(0o755)` on the copy) or run it through its interpreter".into()
            }
            EntryCheckError::NoInterpreter { interpreter, .. } => format!(
                "copy `{interpreter}` into the image too, or build the program statically (for Go: `CGO_ENABLED=0`)"
            ),
            EntryCheckError::WrongMachine { platform, .. } => format!(
                "build the program for {platform} (cross-compile in a stage on `image(.., [platform(build_platform())])`, e.g. Go `GOARCH={}`), or build the image for the program's platform (`--platform`)",
                platform.architecture
            ),
            EntryCheckError::Open(_) | EntryCheckError::Layer { .. } => {
                "run `kiln cache check`".into()
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Kind {
    File { mode: u32, head: Vec<u8> },
    Dir,
    Symlink(String),
    Hardlink(String),
    Other(&'static str),
}

/// The merged filesystem of an image: absolute path -> entry.
#[derive(Debug, Default)]
pub struct Index {
    entries: BTreeMap<String, Kind>,
}

fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn remove_under(entries: &mut BTreeMap<String, Kind>, dir: &str, keep_dir: bool) {
    let prefix = if dir == "/" {
        "/".to_string()
    } else {
        format!("{dir}/")
    };
    let doomed: Vec<String> = entries
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in doomed {
        entries.remove(&k);
    }
    if !keep_dir {
        entries.remove(dir);
    }
}

impl Index {
    /// Adds one layer (an uncompressed tar) on top of what is there.
    pub fn add_layer(&mut self, tar: impl Read) -> std::io::Result<()> {
        let mut layer: Vec<(String, Kind)> = Vec::new();
        let mut ar = tar::Archive::new(tar);
        for e in ar.entries()? {
            let mut e = e?;
            let path = clean(&String::from_utf8_lossy(&e.path_bytes()));
            let h = e.header().clone();
            let mode = h.mode().unwrap_or(0);
            let link = || {
                e.link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link()),
                tar::EntryType::Link => Kind::Hardlink(clean(&link())),
                t if t.is_file() => {
                    let mut head = Vec::new();
                    if is_ld_so_conf(&path) {
                        // the ELF check reads them whole
                        (&mut e).take(MAX_CONF).read_to_end(&mut head)?;
                    } else if mode & 0o111 != 0 {
                        (&mut e).take(HEAD as u64).read_to_end(&mut head)?;
                    }
                    Kind::File { mode, head }
                }
                tar::EntryType::Char | tar::EntryType::Block => Kind::Other("a device node"),
                tar::EntryType::Fifo => Kind::Other("a fifo"),
                _ => continue,
            };
            layer.push((path, kind));
        }
        // whiteouts first: they hide what the layers below left (and only that)
        for (path, _) in &layer {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let dir = if dir.is_empty() { "/" } else { dir };
            if name == ".wh..wh..opq" {
                remove_under(&mut self.entries, dir, true);
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let p = clean(&format!("{dir}/{hidden}"));
                remove_under(&mut self.entries, &p, false);
            }
        }
        for (path, kind) in layer {
            let name = path.rsplit('/').next().unwrap_or_default();
            if name.starts_with(".wh.") {
                continue;
            }
            if !matches!(kind, Kind::Dir) {
                // a file replacing a directory hides what was under it
                remove_under(&mut self.entries, &path, true);
            }
            self.entries.insert(path, kind);
        }
        Ok(())
    }

    /// Whether `path` names a file, through symlinks as the kernel follows
    /// them (the ELF check's loader and library lookups).
    pub fn is_file(&self, path: &str) -> bool {
        matches!(self.resolve(path), Some((_, Kind::File { .. })))
    }

    /// The content of `/etc/ld.so.conf` or a file under
    /// `/etc/ld.so.conf.d/` (the only files whose content is kept), through
    /// symlinks.
    pub fn ld_so_conf(&self, path: &str) -> Option<&[u8]> {
        match self.resolve(path) {
            Some((p, Kind::File { head, .. })) if is_ld_so_conf(&p) => Some(head.as_slice()),
            _ => None,
        }
    }

    /// The names of the entries directly in the directory `dir` (a clean
    /// absolute path, not followed through symlinks), sorted.
    pub fn names_in(&self, dir: &str) -> Vec<String> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| Some(k[prefix.len()..].to_string()).filter(|n| !n.contains('/')))
            .collect()
    }

    /// Follows `path` as the kernel does (symlinks anywhere, `..`), to the
    /// entry it names: `Ok(None)` when something on the way is missing.
    fn resolve(&self, path: &str) -> Option<(String, &Kind)> {
        let mut todo: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut cur = String::from("/");
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == "." {
                continue;
            }
            if c == ".." {
                cur = match cur.rsplit_once('/') {
                    Some(("", _)) | None => "/".into(),
                    Some((p, _)) => p.into(),
                };
                continue;
            }
            let next = if cur == "/" {
                format!("/{c}")
            } else {
                format!("{cur}/{c}")
            };
            let kind = if next == "/" {
                &Kind::Dir
            } else {
                self.entries.get(&next)?
            };
            match kind {
                Kind::Symlink(target) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return None;
                    }
                    if target.starts_with('/') {
                        cur = "/".into();
                    }
                    for t in target.split('/').filter(|c| !c.is_empty()).rev() {
                        todo.push(t.to_string());
                    }
                }
                Kind::Hardlink(target) => {
                    let k = self.entries.get(target)?;
                    if todo.is_empty() {
                        return Some((next, k));
                    }
                    return None;
                }
                k => {
                    if todo.is_empty() {
                        return Some((next, k));
                    }
                    if !matches!(k, Kind::Dir) {
                        return None;
                    }
                    cur = next;
                }
            }
        }
        Some((cur, &Kind::Dir))
    }
}

/// The largest `ld.so.conf` file read.
const MAX_CONF: u64 = 64 << 10;

/// `/etc/ld.so.conf` and the files under `/etc/ld.so.conf.d/`: what
/// ldconfig(8) builds the loader's cache from.
fn is_ld_so_conf(path: &str) -> bool {
    path == "/etc/ld.so.conf" || path.starts_with("/etc/ld.so.conf.d/")
}

/// The program an ELF file asks the kernel to load it with (`PT_INTERP`),
/// when its first bytes hold it.
fn elf_interpreter(head: &[u8]) -> Option<String> {
    use goblin::container::{Container, Ctx, Endian};
    use goblin::elf::{Elf, ProgramHeader, program_header::PT_INTERP};
    let h = Elf::parse_header(head).ok()?;
    let container = if h.e_ident[goblin::elf::header::EI_CLASS] == goblin::elf::header::ELFCLASS64 {
        Container::Big
    } else {
        Container::Little
    };
    let endian = Endian::from(h.e_ident[goblin::elf::header::EI_DATA] == 1);
    let ctx = Ctx::new(container, endian);
    let end = h.e_phoff as usize + h.e_phnum as usize * h.e_phentsize as usize;
    if end > head.len() {
        return None;
    }
    let phs = ProgramHeader::parse(head, h.e_phoff as usize, h.e_phnum as usize, ctx).ok()?;
    let interp = phs.iter().find(|p| p.p_type == PT_INTERP)?;
    let (from, len) = (interp.p_offset as usize, interp.p_filesz as usize);
    let bytes = head.get(from..from + len)?;
    let s = String::from_utf8_lossy(bytes);
    Some(s.trim_end_matches('\0').to_string())
}

/// The program of a `#!` line.
fn shebang(head: &[u8]) -> Option<String> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    line.split_whitespace().next().map(str::to_string)
}

/// Checks `argv[0]` of the image's command (see the module docs); `what` is
/// `entrypoint` or `cmd`. With the image's `platform`, an ELF program must
/// also be built for its architecture.
pub fn check_command(
    index: &Index,
    what: &'static str,
    argv0: &str,
    path_var: &str,
    workdir: &str,
    platform: Option<&kiln_types::Platform>,
) -> Result<(), EntryCheckError> {
    let candidates: Vec<String> = if argv0.contains('/') {
        vec![if argv0.starts_with('/') {
            argv0.to_string()
        } else {
            clean(&format!("{workdir}/{argv0}"))
        }]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| clean(&format!("{d}/{argv0}")))
            .collect()
    };
    // like execvp(3): the first executable file on the way wins; a file
    // found that cannot run is what is reported if nothing else is found
    let mut found: Option<EntryCheckError> = None;
    for c in &candidates {
        let Some((real, kind)) = index.resolve(c) else {
            continue;
        };
        let not_exec = |found: String| EntryCheckError::NotExecutable {
            what,
            program: argv0.to_string(),
            found,
        };
        match kind {
            Kind::File { mode, head } if mode & 0o111 != 0 => {
                if let (Some(p), Some(found)) = (platform, crate::elfcheck::head_goarch(head))
                    && !crate::elfcheck::arch_fits(found, &p.architecture)
                {
                    return Err(EntryCheckError::WrongMachine {
                        what,
                        program: argv0.to_string(),
                        file: real,
                        found: found.to_string(),
                        platform: Box::new(p.clone()),
                    });
                }
                let interpreter = elf_interpreter(head).or_else(|| shebang(head));
                if let Some(i) = interpreter {
                    let ok = matches!(index.resolve(&i), Some((_, Kind::File { .. })));
                    if !ok {
                        return Err(EntryCheckError::NoInterpreter {
                            what,
                            program: argv0.to_string(),
                            interpreter: i,
                        });
                    }
                }
                return Ok(());
            }
            Kind::File { mode, .. } => {
                found.get_or_insert(not_exec(format!("`{real}` with mode {:o}", mode & 0o7777)));
            }
            Kind::Dir => {
                found.get_or_insert(not_exec(format!("the directory `{real}`")));
            }
            Kind::Other(k) => {
                found.get_or_insert(not_exec(format!("{k} at `{real}`")));
            }
            Kind::Symlink(_) | Kind::Hardlink(_) => {}
        }
    }
    Err(found.unwrap_or_else(|| {
        if argv0.contains('/') {
            EntryCheckError::Missing {
                what,
                program: argv0.to_string(),
            }
        } else {
            EntryCheckError::NotInPath {
                what,
                program: argv0.to_string(),
                path: path_var.to_string(),
            }
        }
    }))
}

/// Which part of the config names the program: the entrypoint, else the
/// cmd; `None` when the image has no command (nothing to check).
pub fn command_of(image: &Image) -> Option<(&'static str, String)> {
    let config = image.config.config().as_ref()?;
    if let Some(e) = config.entrypoint().as_ref().and_then(|e| e.first()) {
        return Some(("entrypoint", e.clone()));
    }
    let c = config.cmd().as_ref().and_then(|c| c.first())?;
    Some(("cmd", c.clone()))
}

/// Checks the image's command (see the module docs), reading its layers
/// from `store` unless this image passed before.
pub fn check(store: &Store, image: &Image) -> Result<(), EntryCheckError> {
    let Some((what, argv0)) = command_of(image) else {
        return Ok(());
    };
    let key = image.digest.to_string();
    if let Ok(Some(_)) = store.get_record("entry-check", key.as_bytes()) {
        return Ok(());
    }
    let config = image.config.config().clone().unwrap_or_default();
    let path_var = config
        .env()
        .as_ref()
        .and_then(|env| env.iter().rev().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let workdir = config.working_dir().clone().unwrap_or_else(|| "/".into());
    let mut index = Index::default();
    for l in &image.layers {
        let rd = kiln_oci::open_layer(store, l).map_err(|e| EntryCheckError::Open(Box::new(e)))?;
        index
            .add_layer(rd)
            .map_err(|source| EntryCheckError::Layer {
                digest: l.digest.to_string(),
                source,
            })?;
    }
    let platform = kiln_types::Platform::new(
        &image.config.os().to_string(),
        &image.config.architecture().to_string(),
        image.config.variant().as_deref(),
    )
    .normalized();
    check_command(&index, what, &argv0, &path_var, &workdir, Some(&platform))?;
    // remembered only when it passed: a failure is checked again
    let _ = store.put_record("entry-check", key.as_bytes(), b"ok");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        Dir(&'a str),
        File(&'a str, u32, &'a [u8]),
        Link(&'a str, &'a str),
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_ustar();
            match e {
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::File(p, mode, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Link(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// A minimal x86-64 ELF header with one program header, PT_INTERP.
    fn elf_with_interp(interp: &str) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little endian
        f[6] = 1; // version
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let off = f.len() as u64;
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        f[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(interp.len() as u64 + 1).to_le_bytes());
        f.extend_from_slice(interp.as_bytes());
        f.push(0);
        f
    }

    fn index(layers: &[Vec<u8>]) -> Index {
        let mut i = Index::default();
        for l in layers {
            i.add_layer(&l[..]).unwrap();
        }
        i
    }

    #[test]
    fn commands_resolve_as_exec_would() {
        let dynamic = elf_with_interp("/lib64/ld-linux-x86-64.so.2");
        let base = layer(&[
            E::Dir("usr/"),
            E::Dir("usr/bin/"),
            E::Link("bin", "usr/bin"),
            E::File("usr/bin/python3.11", 0o755, &dynamic),
            E::Link("usr/bin/python3", "python3.11"),
            E::File("usr/bin/script", 0o755, b"#!/usr/bin/python3\nprint(1)\n"),
            E::File("usr/bin/perlscript", 0o755, b"#!/usr/bin/perl -w\n"),
            E::File("greeting", 0o644, b"hello\n"),
            E::File("static", 0o755, b"\x7fELF not parsed: no interpreter"),
            E::Dir("app/"),
            E::File("app/run.sh", 0o755, b"#!/bin/sh\n"),
            E::Link("dangling", "/nowhere"),
        ]);
        let loader = layer(&[
            E::Dir("lib64/"),
            E::File("lib64/ld-linux-x86-64.so.2", 0o755, b"\x7fELF"),
        ]);
        let path = "/usr/local/bin:/usr/bin:/bin";
        let with_loader = index(&[base.clone(), loader.clone()]);
        let without = index(std::slice::from_ref(&base));
        let ok = |i: &Index, argv0: &str, wd: &str| check_command(i, "cmd", argv0, path, wd, None);
        assert!(ok(&with_loader, "python3", "/").is_ok());
        assert!(ok(&with_loader, "/bin/python3", "/").is_ok());
        assert!(ok(&with_loader, "script", "/").is_ok());
        assert!(ok(&with_loader, "/static", "/").is_ok());
        let err = |i: &Index, argv0: &str, wd: &str| ok(i, argv0, wd).unwrap_err().to_string();
        assert_eq!(
            err(&without, "python3", "/"),
            "the image's cmd `python3` needs `/lib64/ld-linux-x86-64.so.2`, which the image does not have"
        );
        assert_eq!(
            err(&with_loader, "perlscript", "/"),
            "the image's cmd `perlscript` needs `/usr/bin/perl`, which the image does not have"
        );
        assert_eq!(
            err(&with_loader, "/greeting", "/"),
            "the image's cmd `/greeting` is `/greeting` with mode 644, not an executable file"
        );
        assert_eq!(
            err(&with_loader, "node", "/"),
            "the image's cmd `node` is not in the image: not found in PATH `/usr/local/bin:/usr/bin:/bin`"
        );
        assert_eq!(
            err(&with_loader, "/dangling", "/"),
            "the image's cmd `/dangling` does not exist in the image"
        );
        assert_eq!(
            err(&with_loader, "/app", "/"),
            "the image's cmd `/app` is the directory `/app`, not an executable file"
        );
        // relative to the working directory; its `#!/bin/sh` is missing
        assert_eq!(
            err(&with_loader, "./run.sh", "/app"),
            "the image's cmd `./run.sh` needs `/bin/sh`, which the image does not have"
        );
        // a later layer's whiteout removes the loader, an opaque dir empties /app
        let gone = layer(&[
            E::Dir("lib64/"),
            E::File("lib64/.wh.ld-linux-x86-64.so.2", 0o644, b""),
        ]);
        assert!(
            ok(
                &index(&[base.clone(), loader.clone(), gone]),
                "python3",
                "/"
            )
            .is_err()
        );
        let opaque = layer(&[E::Dir("app/"), E::File("app/.wh..wh..opq", 0o644, b"")]);
        assert!(ok(&index(&[base, loader, opaque]), "/app/run.sh", "/").is_err());
    }

    #[test]
    fn a_command_for_another_machine_is_named_with_both() {
        let arm = include_bytes!("../tests/fixtures/elf/hello-arm64-static");
        let amd = include_bytes!("../tests/fixtures/elf/hello-amd64-static");
        let i = index(&[layer(&[
            E::Dir("usr/"),
            E::Dir("usr/bin/"),
            E::File("usr/bin/arm", 0o755, arm),
            E::File("usr/bin/amd", 0o755, amd),
            E::Link("usr/bin/hello", "amd"),
        ])]);
        let arm64 = kiln_types::Platform::parse("linux/arm64").unwrap();
        let amd64 = kiln_types::Platform::parse("linux/amd64").unwrap();
        let check = |argv0: &str, p: &kiln_types::Platform| {
            check_command(&i, "entrypoint", argv0, DEFAULT_PATH, "/", Some(p))
        };
        check("arm", &arm64).unwrap();
        check("amd", &amd64).unwrap();
        let e = check("hello", &arm64).unwrap_err();
        assert!(matches!(e, EntryCheckError::WrongMachine { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the image's entrypoint `hello` (`/usr/bin/amd`) is built for amd64, but the image is for linux/arm64: it would fail with \"exec format error\""
        );
        assert!(e.help().contains("GOARCH=arm64"), "{}", e.help());
        let e = check("/usr/bin/arm", &amd64).unwrap_err();
        assert!(
            e.to_string()
                .contains("built for arm64, but the image is for linux/amd64"),
            "{e}"
        );
        // without a platform, only what it runs with is checked
        check_command(&i, "cmd", "arm", DEFAULT_PATH, "/", None).unwrap();
    }
}
