//! The static/dynamic check: an image rooted in `static_base()` or
//! `scratch()` has no dynamic loader and no libc, so a dynamically linked
//! ELF binary copied into it fails at run time with a baffling "no such file
//! or directory" (the kernel cannot find its `PT_INTERP`). This module finds
//! such binaries before the image is exported.
//!
//! The same walk catches the other trap of `--platform`: an executable of
//! another architecture (an amd64 Go binary in a linux/arm64 image) would
//! fail with "exec format error".
//!
//! [`linkage`] and [`goarch`] are pure functions over a file's bytes
//! (parsed with goblin).
//! [`check`] walks what the final image's copies brought in: each `copy`
//! is one file op that adds exactly one layer, so the layers of the file ops
//! on the final stage's chain are read back from the store and every ELF
//! file in them is inspected. Copies marked `allow_dynamic()` are skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use goblin::elf::Elf;
use kiln_dag::{Definition, Digest, FileAction, Location, Op, SourceOp, Vertex};
use kiln_oci::{Compression, Store};

use crate::cache_io::CacheImport;
use crate::snapshot::{LayerRef, Ref};

/// How an ELF file is linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    /// Not an ELF file (a script, data, ...).
    NotElf,
    /// Needs nothing at run time: static, or static-pie.
    Static,
    /// Needs a dynamic loader (`PT_INTERP`) or shared libraries
    /// (`DT_NEEDED`), which a static base does not have.
    Dynamic {
        interpreter: Option<String>,
        needed: Vec<String>,
        /// `DT_RUNPATH`, else `DT_RPATH`, entries as written (`$ORIGIN`
        /// unexpanded): where the loader looks before its defaults.
        search: Vec<String>,
    },
    /// Starts like ELF but does not parse; it cannot run either way.
    Malformed(String),
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// Whether `bytes` start like an ELF file (cheap pre-check before reading
/// a whole file).
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(ELF_MAGIC)
}

/// How the ELF file in `bytes` is linked.
pub fn linkage(bytes: &[u8]) -> Linkage {
    examine(bytes).0
}

/// The GOARCH name (as in image configs) of the ELF file in `bytes`, when
/// it is one kiln knows.
pub fn goarch(bytes: &[u8]) -> Option<&'static str> {
    examine(bytes).1
}

/// The ELF machines of the architectures kiln knows: GOARCH name, 64-bit,
/// little-endian, `e_machine` (elf(5); LoongArch's 258 is newer than goblin's
/// constants).
const MACHINES: &[(&str, bool, bool, u16)] = {
    use goblin::elf::header::{
        EM_386, EM_AARCH64, EM_ARM, EM_MIPS, EM_PPC64, EM_RISCV, EM_S390, EM_X86_64,
    };
    &[
        ("amd64", true, true, EM_X86_64),
        ("arm64", true, true, EM_AARCH64),
        ("386", false, true, EM_386),
        ("arm", false, true, EM_ARM),
        ("riscv64", true, true, EM_RISCV),
        ("ppc64le", true, true, EM_PPC64),
        ("ppc64", true, false, EM_PPC64),
        ("s390x", true, false, EM_S390),
        ("mips64le", true, true, EM_MIPS),
        ("mips64", true, false, EM_MIPS),
        ("mipsle", false, true, EM_MIPS),
        ("mips", false, false, EM_MIPS),
        ("loong64", true, true, 258),
    ]
};

fn machine_goarch(elf: &Elf) -> Option<&'static str> {
    header_arch(elf.is_64, elf.little_endian, elf.header.e_machine)
}

fn header_arch(is_64: bool, little: bool, machine: u16) -> Option<&'static str> {
    MACHINES
        .iter()
        .find(|(_, b, l, m)| *b == is_64 && *l == little && *m == machine)
        .map(|(a, ..)| *a)
}

/// The GOARCH name of the ELF file whose first bytes are `head` (only its
/// identification and header are read), when it is one kiln knows.
pub fn head_goarch(head: &[u8]) -> Option<&'static str> {
    use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB};
    if !is_elf(head) {
        return None;
    }
    let h = Elf::parse_header(head).ok()?;
    header_arch(
        h.e_ident[EI_CLASS] == ELFCLASS64,
        h.e_ident[EI_DATA] == ELFDATA2LSB,
        h.e_machine,
    )
}

/// The first 20 bytes of an executable (`ET_EXEC`) for the GOARCH `arch`:
/// identification, type and machine, what binfmt_misc handlers match.
pub fn elf_header(arch: &str) -> Option<[u8; 20]> {
    let &(_, is_64, little, machine) = MACHINES.iter().find(|(a, ..)| *a == arch)?;
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(ELF_MAGIC);
    h[4] = if is_64 { 2 } else { 1 };
    h[5] = if little { 1 } else { 2 };
    h[6] = 1; // EV_CURRENT
    let (e_type, e_machine) = if little {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

/// Whether a program for `found` runs in an image for `image` (the kernel
/// runs 32-bit x86 and, mostly, 32-bit arm programs on their 64-bit kin).
pub fn arch_fits(found: &str, image: &str) -> bool {
    found == image || matches!((found, image), ("386", "amd64") | ("arm", "arm64"))
}

fn examine(bytes: &[u8]) -> (Linkage, Option<&'static str>) {
    if !is_elf(bytes) {
        return (Linkage::NotElf, None);
    }
    match Elf::parse(bytes) {
        Err(e) => (Linkage::Malformed(crate::chain(&e)), None),
        Ok(elf) => {
            let arch = machine_goarch(&elf);
            let interpreter = elf.interpreter.map(str::to_string);
            let needed: Vec<String> = elf.libraries.iter().map(|s| s.to_string()).collect();
            // ld.so(8): DT_RPATH is ignored when DT_RUNPATH is present
            let paths = if elf.runpaths.is_empty() {
                &elf.rpaths
            } else {
                &elf.runpaths
            };
            let search = paths
                .iter()
                .flat_map(|p| p.split(':'))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            let linkage = if interpreter.is_none() && needed.is_empty() {
                Linkage::Static
            } else {
                Linkage::Dynamic {
                    interpreter,
                    needed,
                    search,
                }
            };
            (linkage, arch)
        }
    }
}

/// A file a copy put into a static image that would not run there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offender {
    /// Absolute path in the image.
    pub path: String,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    /// RUNPATH (else RPATH) directories, `$ORIGIN` unexpanded.
    pub search: Vec<String>,
    /// Its architecture (GOARCH), when known.
    pub arch: Option<String>,
    /// The copy step's name and Kilnfile location.
    pub step: Option<String>,
    pub location: Option<Location>,
    /// The loader and libraries not found in the final image, when the
    /// image carries Debian packages (its own loader and libraries).
    pub missing: Vec<String>,
    /// The packages that ship each missing one where the loader would find
    /// it, as the repository's `Contents` index says (empty when it was
    /// not read or names none).
    pub shipped_by: BTreeMap<String, Vec<String>>,
    /// Missing libraries that are in a directory `/etc/ld.so.conf` names,
    /// with that directory, in an image without `/etc/ld.so.cache` (the
    /// loader reads the directories only through the cache).
    pub uncached: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfCheckError {
    #[error("{}", describe(base, offenders))]
    Dynamic {
        /// `static_base()` or `scratch()`.
        base: String,
        offenders: Vec<Offender>,
    },
    #[error("{}", describe_arch(platform, offenders))]
    Arch {
        /// The image's platform.
        platform: kiln_types::Platform,
        offenders: Vec<Offender>,
    },
    #[error("cannot read layer {digest} of step `{step}` to check its binaries: {reason}")]
    Layer {
        digest: String,
        step: String,
        reason: String,
    },
}

impl ElfCheckError {
    /// What to do about it.
    pub fn help(&self) -> Option<String> {
        match self {
            ElfCheckError::Dynamic { offenders, .. }
                if offenders.iter().any(|o| !o.missing.is_empty()) =>
            {
                let named: BTreeSet<&str> = offenders
                    .iter()
                    .flat_map(|o| o.shipped_by.values().filter_map(|p| p.first()))
                    .map(String::as_str)
                    .collect();
                Some(if named.is_empty() {
                    "add the packages that ship them to the stage's `.packages([..])` set, or mark the copy with `allow_dynamic()` if the image brings them otherwise".to_string()
                } else {
                    format!(
                        "add {} to the stage's `.packages([..])` set",
                        named
                            .iter()
                            .map(|p| format!("`{p}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
            }
            ElfCheckError::Dynamic { .. } => Some(FIX.to_string()),
            ElfCheckError::Arch { platform, .. } => Some(format!(
                "build it for {platform}: cross-compile in a stage on \
                 `image(.., [platform(build_platform())])` with Go `GOARCH={arch}`, Rust \
                 `--target {}`, C a cross compiler (`gcc-{}` packages); or build the image for \
                 the binary's platform (`--platform`); `allow_dynamic()` on the copy skips the \
                 check",
                rust_target(&platform.architecture),
                gnu_triple(&platform.architecture),
                arch = platform.architecture,
            )),
            ElfCheckError::Layer { .. } => None,
        }
    }
}

/// The fix, for every toolchain the seeds mention.
pub const FIX: &str = "link it statically: Go `CGO_ENABLED=0 go build`, C/C++ `gcc -static`, \
Rust `RUSTFLAGS=\"-C target-feature=+crt-static\"` (or a musl target); \
or, when the image brings its own loader and libraries, mark the copy with `allow_dynamic()`";

fn rust_target(arch: &str) -> String {
    match arch {
        "amd64" => "x86_64-unknown-linux-musl".into(),
        "arm64" => "aarch64-unknown-linux-musl".into(),
        "386" => "i686-unknown-linux-musl".into(),
        "arm" => "armv7-unknown-linux-musleabihf".into(),
        "riscv64" => "riscv64gc-unknown-linux-gnu".into(),
        "ppc64le" => "powerpc64le-unknown-linux-gnu".into(),
        "s390x" => "s390x-unknown-linux-gnu".into(),
        other => format!("<{other} target>"),
    }
}

fn gnu_triple(arch: &str) -> &'static str {
    match arch {
        "amd64" => "x86-64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "386" => "i686-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "ppc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        _ => "<arch>-linux-gnu",
    }
}

fn copied_by(s: &mut String, o: &Offender) {
    if let Some(step) = &o.step {
        s.push_str(&format!(", copied by `{step}`"));
    }
    if let Some(l) = &o.location {
        s.push_str(&format!(" at {l}"));
    }
}

fn describe_arch(platform: &kiln_types::Platform, offenders: &[Offender]) -> String {
    let mut s = String::new();
    for o in offenders {
        s.push_str(&format!(
            "`{}` is built for {}",
            o.path,
            o.arch.as_deref().unwrap_or("another architecture")
        ));
        copied_by(&mut s, o);
        s.push('\n');
    }
    s.push_str(&format!(
        "the image is for {platform}: {} would fail with \"exec format error\"",
        if offenders.len() == 1 { "it" } else { "they" }
    ));
    s
}

fn describe(base: &str, offenders: &[Offender]) -> String {
    let mut s = String::new();
    for (i, o) in offenders.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&format!("`{}` is dynamically linked", o.path));
        match &o.interpreter {
            Some(i) => s.push_str(&format!(" (interpreter `{i}`")),
            None => s.push_str(" (no interpreter"),
        }
        if !o.needed.is_empty() {
            s.push_str(&format!(", needs {}", o.needed.join(", ")));
        }
        s.push(')');
        if !o.missing.is_empty() {
            s.push_str(&format!(
                ", and the image lacks {}",
                o.missing
                    .iter()
                    .map(|m| match o.shipped_by.get(m) {
                        Some(p) => format!(
                            "`{m}` (in package {})",
                            p.iter()
                                .map(|p| format!("`{p}`"))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ),
                        None => format!("`{m}`"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        copied_by(&mut s, o);
        for (lib, dir) in &o.uncached {
            s.push_str(&format!(
                "\n`{lib}` is in `{dir}`, which `/etc/ld.so.conf` names, but the image has no `/etc/ld.so.cache`: the loader finds such directories only through the cache ldconfig writes"
            ));
        }
    }
    if offenders.iter().any(|o| !o.missing.is_empty()) {
        s.push_str(&format!(
            "\nthe image is rooted in `{base}` with Debian packages that do not provide them: add the packages that ship them to `.packages([..])`"
        ));
        return s;
    }
    s.push_str(&format!(
        "\nthe image is rooted in `{base}`, which has no dynamic loader or libc: {} would not start",
        if offenders.len() == 1 { "it" } else { "they" }
    ));
    s
}

/// The file ops (and package sets) on top of the final image, nearest the
/// root first, and the source the stage starts from when nothing else
/// (an exec, another merge) is in between; the chain then ends there.
fn stage_chain(def: &Definition) -> Option<(Vec<&Vertex>, Option<&SourceOp>)> {
    let by_digest: HashMap<Digest, &Vertex> = def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut chain = Vec::new();
    let mut cur = *by_digest.get(&def.root)?;
    loop {
        match &cur.op {
            Op::Source(s) => return Some((chain, Some(s))),
            Op::File(_) => {
                chain.push(cur);
                cur = by_digest.get(cur.inputs.first()?)?;
            }
            // a Debian package set merged on adds one layer per set
            Op::Merge(_) => {
                let sets = cur.inputs.iter().skip(1).all(|d| {
                    by_digest
                        .get(d)
                        .is_some_and(|v| matches!(v.op, Op::Source(SourceOp::DebianPackages(_))))
                });
                if !sets {
                    return Some((chain, None));
                }
                chain.push(cur);
                cur = by_digest.get(cur.inputs.first()?)?;
            }
            Op::Exec(_) => return Some((chain, None)),
        }
    }
}

/// Checks the final image (`root`, the solved result of `def`, for
/// `platform`): every ELF file a copy without `allow_dynamic()` brought in
/// on top of it must be built for the platform's architecture, and when
/// the stage starts from `static_base()` or `scratch()` it must also be
/// statically linked. A binary of another machine is reported first (and
/// alone): it cannot start however it is linked, and rebuilding it for the
/// image's platform is the fix.
///
/// A missing library is looked up in the `Contents` index of the stage's
/// package sets (`context` holds their keyrings), so the error can name
/// the package that ships it; that index is read only then.
pub fn check(
    store: &Store,
    def: &Definition,
    root: &Ref,
    platform: &kiln_types::Platform,
    imported: Option<&CacheImport>,
    context: &Path,
) -> Result<(), ElfCheckError> {
    let arch = platform.architecture.as_str();
    let Some((chain, source)) = stage_chain(def) else {
        return Ok(());
    };
    // on another base (or above a run step) the image may bring its own
    // loader and libraries: only the machine type is checked
    let base = match source {
        Some(SourceOp::StaticBase { .. }) => Some("static_base()"),
        Some(SourceOp::Scratch) => Some("scratch()"),
        _ => None,
    };
    // Each file op added exactly one layer on top of the source's, each
    // package set one: the last layers of the result, in reverse order of
    // `chain`.
    let added = |v: &&Vertex| match v.op {
        Op::Merge(_) => v.inputs.len() - 1,
        _ => 1,
    };
    if root.layers.len() < chain.iter().map(added).sum::<usize>() {
        return Ok(());
    }
    let packages = chain.iter().any(|v| matches!(v.op, Op::Merge(_)));
    let mut offenders = Vec::new();
    let mut foreign = Vec::new();
    let mut layers = root.layers.iter().rev();
    for v in &chain {
        if let Op::Merge(_) = v.op {
            for _ in 0..added(v) {
                layers.next();
            }
            continue;
        }
        let Some(layer) = layers.next() else { break };
        let Op::File(f) = &v.op else { continue };
        let copies: Vec<bool> = f
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) => Some(c.allow_dynamic),
                _ => None,
            })
            .collect();
        if copies.is_empty() || copies.iter().any(|allow| *allow) {
            continue;
        }
        let step = v.meta.name.clone().unwrap_or_else(|| v.digest.short());
        for f in elf_in_layer_cached(store, imported, layer, &step)? {
            let wrong_arch = f.arch.as_deref().is_some_and(|a| !arch_fits(a, arch));
            let o = Offender {
                path: f.path,
                interpreter: f.interpreter,
                needed: f.needed,
                search: f.search,
                arch: f.arch,
                step: v.meta.name.clone(),
                location: v.meta.location.clone(),
                missing: Vec::new(),
                shipped_by: BTreeMap::new(),
                uncached: Vec::new(),
            };
            if wrong_arch {
                foreign.push(o);
            } else if f.dynamic && base.is_some() {
                offenders.push(o);
            }
        }
    }
    // With Debian packages the image carries its own loader and libraries:
    // a binary is fine when they resolve in the final image.
    // Reading the final image's layers is most of a no-op rebuild's time
    // (a Python image inflates ~50 MB): a verdict that passed is kept, by
    // what it is a function of.
    if packages && !offenders.is_empty() {
        let key = resolved_key(root, arch, &offenders);
        if let Ok(Some(_)) = store.get_record(RESOLVED_KIND, key.as_bytes()) {
            offenders.clear();
        } else {
            let index = final_index(store, root)?;
            let conf = Conf::of(&index);
            offenders.retain_mut(|o| {
                (o.missing, o.uncached) = missing_in(&index, o, arch, &conf);
                !o.missing.is_empty()
            });
            if offenders.is_empty() {
                let _ = store.put_record(RESOLVED_KIND, key.as_bytes(), b"ok");
            } else {
                name_packages(store, &chain, def, platform, context, &mut offenders);
            }
        }
    }
    // Base-most copies first, as they appear in the Kilnfile.
    offenders.reverse();
    foreign.reverse();
    if !foreign.is_empty() {
        return Err(ElfCheckError::Arch {
            platform: platform.normalized(),
            offenders: foreign,
        });
    }
    if let (Some(base), false) = (base, offenders.is_empty()) {
        return Err(ElfCheckError::Dynamic {
            base: base.to_string(),
            offenders,
        });
    }
    Ok(())
}

/// Record kind of dynamic binaries found to resolve in their image.
const RESOLVED_KIND: &str = "elf-resolved";

/// What "every loader and library of these binaries is in this image" is a
/// function of: the image's layers, the architecture and the binaries.
fn resolved_key(root: &Ref, arch: &str, offenders: &[Offender]) -> String {
    let mut e = kiln_dag::canonical::Encoder::new();
    e.tag("kiln-elf-resolved/v1");
    e.str(arch);
    e.u64(root.layers.len() as u64);
    for l in &root.layers {
        e.str(&l.digest);
    }
    e.u64(offenders.len() as u64);
    for o in offenders {
        e.str(&o.path);
        e.str(o.interpreter.as_deref().unwrap_or(""));
        e.u64(o.needed.len() as u64);
        for n in &o.needed {
            e.str(n);
        }
        e.u64(o.search.len() as u64);
        for d in &o.search {
            e.str(d);
        }
    }
    Digest::of(&e.into_bytes()).to_string()
}

/// The merged filesystem of the final image's layers.
fn final_index(store: &Store, root: &Ref) -> Result<crate::entrycheck::Index, ElfCheckError> {
    let mut index = crate::entrycheck::Index::default();
    for l in &root.layers {
        let lerr = |reason: String| ElfCheckError::Layer {
            digest: l.digest.clone(),
            step: "the final image".to_string(),
            reason,
        };
        let layer = l.to_layer().map_err(|e| lerr(crate::chain(&e)))?;
        let rd = kiln_oci::open_layer(store, &layer).map_err(|e| lerr(crate::chain(&e)))?;
        index.add_layer(rd).map_err(|e| lerr(crate::chain(&e)))?;
    }
    Ok(index)
}

/// `d` as an absolute path without `.`, `..` or doubled slashes (what the
/// merged index is keyed by); `..` stops at the root, as the kernel's.
pub(crate) fn normalize(d: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in d.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Debian's multiarch directory name of a GOARCH.
fn multiarch(arch: &str) -> &'static str {
    match arch {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "386" => "i386-linux-gnu",
        "ppc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        "mips64le" => "mips64el-linux-gnuabi64",
        _ => "",
    }
}

/// The library directories the final image's `/etc/ld.so.conf` names,
/// and whether the loader can use them (the image has the cache ldconfig
/// builds from them).
struct Conf {
    dirs: Vec<(String, String)>,
    cached: bool,
}

impl Conf {
    fn of(index: &crate::entrycheck::Index) -> Conf {
        Conf {
            dirs: crate::ldconf::directories(index),
            cached: index.is_file("/etc/ld.so.cache"),
        }
    }
}

/// The directories the loader searches by default: Debian's multiarch
/// ones for `arch` (a GOARCH), then the trusted ones.
fn default_dirs(arch: &str) -> Vec<String> {
    let ma = multiarch(arch);
    let mut dirs = vec![
        format!("/lib/{ma}"),
        format!("/usr/lib/{ma}"),
        "/lib".to_string(),
        "/usr/lib".to_string(),
        "/lib64".to_string(),
        "/usr/lib64".to_string(),
        "/usr/local/lib".to_string(),
    ];
    if ma.is_empty() {
        dirs.drain(..2);
    }
    dirs
}

/// The loader and `DT_NEEDED` libraries of `o` that the image lacks: the
/// loader by its path, each library in its RUNPATH (else RPATH), the
/// directories `/etc/ld.so.conf` names when the image has the loader's
/// cache, and the loader's default and Debian's multiarch directories, as
/// ld.so(8) searches them. Also the missing ones that are in an
/// `ld.so.conf` directory of an image without the cache.
fn missing_in(
    index: &crate::entrycheck::Index,
    o: &Offender,
    arch: &str,
    conf: &Conf,
) -> (Vec<String>, Vec<(String, String)>) {
    let mut missing = Vec::new();
    if let Some(i) = &o.interpreter
        && !index.is_file(i)
    {
        missing.push(i.clone());
    }
    let mut dirs = default_dirs(o.arch.as_deref().unwrap_or(arch));
    if conf.cached {
        let listed = conf.dirs.iter().map(|(d, _)| d.clone());
        dirs.splice(0..0, listed);
    }
    // RUNPATH/RPATH first, as ld.so searches them, `$ORIGIN` being the
    // binary's own directory
    let origin = o.path.rsplit_once('/').map_or("/", |(d, _)| d);
    let origin = if origin.is_empty() { "/" } else { origin };
    let own: Vec<String> = o
        .search
        .iter()
        .map(|d| d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
        .map(|d| normalize(&d))
        .collect();
    dirs.splice(0..0, own);
    for lib in &o.needed {
        let found = if lib.contains('/') {
            index.is_file(lib)
        } else {
            dirs.iter().any(|d| index.is_file(&format!("{d}/{lib}")))
        };
        if !found {
            missing.push(lib.clone());
        }
    }
    let uncached = if conf.cached {
        Vec::new()
    } else {
        missing
            .iter()
            .filter(|lib| !lib.contains('/'))
            .filter_map(|lib| {
                conf.dirs
                    .iter()
                    .find(|(d, _)| index.is_file(&format!("{d}/{lib}")))
                    .map(|(d, _)| (lib.clone(), d.clone()))
            })
            .collect()
    };
    (missing, uncached)
}

/// Fills in [`Offender::shipped_by`] from the `Contents` index of the
/// package sets merged into the final stage (`chain`). Where the index
/// cannot be read the error stays as it is, without package names.
fn name_packages(
    store: &Store,
    chain: &[&Vertex],
    def: &Definition,
    platform: &kiln_types::Platform,
    context: &Path,
    offenders: &mut [Offender],
) {
    let by_digest: HashMap<Digest, &Vertex> = def.vertices.iter().map(|v| (v.digest, v)).collect();
    let sets: Vec<&kiln_dag::DebianPackages> = chain
        .iter()
        .filter(|v| matches!(v.op, Op::Merge(_)))
        .flat_map(|v| v.inputs.iter().skip(1))
        .filter_map(|d| match &by_digest.get(d)?.op {
            Op::Source(SourceOp::DebianPackages(p)) => Some(p),
            _ => None,
        })
        .collect();
    // every place the loader would look for each missing name, as keys of
    // the `Contents` index
    let mut wanted: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (i, o) in offenders.iter().enumerate() {
        let arch = o.arch.as_deref().unwrap_or(&platform.architecture);
        for m in &o.missing {
            let keys = if m.contains('/') {
                vec![kiln_deb::contents_key(m)]
            } else {
                default_dirs(arch)
                    .iter()
                    .map(|d| kiln_deb::contents_key(&format!("{d}/{m}")))
                    .collect()
            };
            wanted.push((i, m.clone(), keys));
        }
    }
    let paths: BTreeSet<String> = wanted.iter().flat_map(|w| w.2.iter().cloned()).collect();
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for set in sets {
        match crate::packages::shipped_by(store, set, platform, context, &paths) {
            Ok(f) => {
                for (k, v) in f {
                    found.entry(k).or_default().extend(v);
                }
            }
            Err(e) => {
                tracing::warn!(error = %kiln_types::error_chain(&e), "cannot read the package index's `Contents` to name the packages of missing libraries");
            }
        }
    }
    for (i, name, keys) in wanted {
        let pkgs: BTreeSet<String> = keys
            .iter()
            .filter_map(|k| found.get(k))
            .flatten()
            .cloned()
            .collect();
        if !pkgs.is_empty() {
            offenders[i]
                .shipped_by
                .insert(name, pkgs.into_iter().collect());
        }
    }
}

/// An ELF file in a layer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Found {
    path: String,
    dynamic: bool,
    interpreter: Option<String>,
    needed: Vec<String>,
    #[serde(default)]
    search: Vec<String>,
    arch: Option<String>,
}

const RECORD_KIND: &str = "elf-check";

/// The record key of a layer blob's scan (the version names the format of
/// [`Found`]: a new one ignores old records and caches).
pub(crate) fn record_key(layer_digest: &str) -> String {
    format!("elfcheck/v3/{layer_digest}")
}

/// The scan recorded in this store under `key`, as the build cache
/// carries it.
pub(crate) fn local_record(store: &Store, key: &str) -> Option<String> {
    let bytes = store.get_record(RECORD_KIND, key.as_bytes()).ok()??;
    String::from_utf8(bytes).ok()
}

/// [`elf_in_layer`], remembered per layer blob: a layer is immutable, and
/// a no-op rebuild must not decompress the image's binaries again. A scan
/// an imported build cache carries counts like a local one (the cache is
/// trusted for the layers themselves already); it is not written here, so
/// a fresh runner writes nothing for it.
fn elf_in_layer_cached(
    store: &Store,
    imported: Option<&CacheImport>,
    layer: &LayerRef,
    step: &str,
) -> Result<Vec<Found>, ElfCheckError> {
    let key = record_key(&layer.digest);
    let parse = |s: &str| serde_json::from_str::<Vec<Found>>(s).ok();
    if let Some(found) = local_record(store, &key).and_then(|s| parse(&s)) {
        return Ok(found);
    }
    if let Some(found) = imported.and_then(|i| i.check_record(&key)).and_then(parse) {
        return Ok(found);
    }
    let found = elf_in_layer(store, layer, step)?;
    if let Ok(b) = serde_json::to_vec(&found) {
        // Losing the record only costs reading the layer again.
        let _ = store.put_record(RECORD_KIND, key.as_bytes(), &b);
    }
    Ok(found)
}

/// The ELF files in one layer blob, with their linkage and architecture.
fn elf_in_layer(store: &Store, layer: &LayerRef, step: &str) -> Result<Vec<Found>, ElfCheckError> {
    let lerr = |reason: String| ElfCheckError::Layer {
        digest: layer.digest.clone(),
        step: step.to_string(),
        reason,
    };
    let l = layer.to_layer().map_err(|e| lerr(crate::chain(&e)))?;
    let f = store
        .open_blob(&l.digest)
        .map_err(|e| lerr(crate::chain(&e)))?;
    let comp =
        Compression::from_media_type(&layer.media_type).map_err(|e| lerr(crate::chain(&e)))?;
    let rd = comp.decoder(f).map_err(|e| lerr(crate::chain(&e)))?;
    let mut ar = tar::Archive::new(rd);
    let mut found = Vec::new();
    for entry in ar.entries().map_err(|e| lerr(crate::chain(&e)))? {
        let mut entry = entry.map_err(|e| lerr(crate::chain(&e)))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| lerr(crate::chain(&e)))?;
        let path = format!(
            "/{}",
            path.to_string_lossy()
                .trim_start_matches("./")
                .trim_start_matches('/')
        );
        let mut magic = [0u8; 4];
        let mut n = 0;
        while n < magic.len() {
            match entry
                .read(&mut magic[n..])
                .map_err(|e| lerr(crate::chain(&e)))?
            {
                0 => break,
                k => n += k,
            }
        }
        if !is_elf(&magic[..n]) {
            continue;
        }
        // Program and dynamic headers may sit anywhere: read the whole file.
        let mut bytes = magic[..n].to_vec();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| lerr(crate::chain(&e)))?;
        let (linkage, arch) = examine(&bytes);
        let arch = arch.map(String::from);
        match linkage {
            Linkage::Dynamic {
                interpreter,
                needed,
                search,
            } => found.push(Found {
                path,
                dynamic: true,
                interpreter,
                needed,
                search,
                arch,
            }),
            Linkage::Static => found.push(Found {
                path,
                dynamic: false,
                interpreter: None,
                needed: Vec::new(),
                search: Vec::new(),
                arch,
            }),
            Linkage::Malformed(reason) => {
                tracing::debug!(%path, %reason, "not checking a malformed ELF file");
            }
            Linkage::NotElf => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(files: &[&str]) -> crate::entrycheck::Index {
        let mut b = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for f in files {
            let mut d = std::path::Path::new(f.trim_start_matches('/'));
            while let Some(p) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_path_buf());
                d = p;
            }
        }
        for d in dirs {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, &d, &[][..]).unwrap();
        }
        for f in files {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, f.trim_start_matches('/'), &[][..])
                .unwrap();
        }
        let mut index = crate::entrycheck::Index::default();
        index.add_layer(&b.into_inner().unwrap()[..]).unwrap();
        index
    }

    #[test]
    fn runpath_and_origin_are_searched_first() {
        let index = index_of(&[
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/opt/tool/lib/libfoo.so.1",
            "/srv/libbar.so.2",
        ]);
        let mut o = Offender {
            path: "/opt/tool/bin/tool".into(),
            interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
            needed: vec![
                "libfoo.so.1".into(),
                "libbar.so.2".into(),
                "libc.so.6".into(),
            ],
            search: Vec::new(),
            arch: Some("amd64".into()),
            step: None,
            location: None,
            missing: Vec::new(),
            shipped_by: BTreeMap::new(),
            uncached: Vec::new(),
        };
        let conf = Conf::of(&index);
        let missing = |o: &Offender| missing_in(&index, o, "amd64", &conf).0;
        // the loader's defaults alone do not find them
        assert_eq!(missing(&o), ["libfoo.so.1", "libbar.so.2"]);
        // RUNPATH `$ORIGIN/../lib:/srv` does, as ld.so would
        o.search = vec!["$ORIGIN/../lib".into(), "/srv/".into()];
        assert!(missing(&o).is_empty());
        o.search = vec!["${ORIGIN}/../../../../opt/tool/lib".into()];
        assert_eq!(missing(&o), ["libbar.so.2"]);
    }

    #[test]
    fn ld_so_conf_counts_with_the_loader_cache() {
        let mut b = tar::Builder::new(Vec::new());
        for d in [
            "etc",
            "etc/ld.so.conf.d",
            "opt",
            "opt/tool",
            "opt/tool/lib",
            "usr",
            "usr/lib",
            "usr/lib/x86_64-linux-gnu",
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, d, &[][..]).unwrap();
        }
        for (path, text) in [
            ("etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n"),
            ("etc/ld.so.conf.d/tool.conf", "/opt/tool/lib\n"),
            ("opt/tool/lib/libfoo.so.1", ""),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", ""),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(text.len() as u64);
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        let layer = b.into_inner().unwrap();
        let mut index = crate::entrycheck::Index::default();
        index.add_layer(&layer[..]).unwrap();
        let o = Offender {
            path: "/usr/local/bin/tool".into(),
            interpreter: None,
            needed: vec!["libfoo.so.1".into(), "libc.so.6".into()],
            search: Vec::new(),
            arch: Some("amd64".into()),
            step: None,
            location: None,
            missing: Vec::new(),
            shipped_by: BTreeMap::new(),
            uncached: Vec::new(),
        };
        // without /etc/ld.so.cache the loader does not look there
        let (missing, uncached) = missing_in(&index, &o, "amd64", &Conf::of(&index));
        assert_eq!(missing, ["libfoo.so.1"]);
        assert_eq!(
            uncached,
            [("libfoo.so.1".to_string(), "/opt/tool/lib".to_string())]
        );
        let err = ElfCheckError::Dynamic {
            base: "static_base()".into(),
            offenders: vec![Offender {
                missing,
                uncached,
                ..o.clone()
            }],
        }
        .to_string();
        assert!(err.contains("no `/etc/ld.so.cache`"), "{err}");
        // with it, the directory counts
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        b.append_data(&mut h, "etc/ld.so.cache", &[][..]).unwrap();
        index.add_layer(&b.into_inner().unwrap()[..]).unwrap();
        let (missing, uncached) = missing_in(&index, &o, "amd64", &Conf::of(&index));
        assert!(missing.is_empty() && uncached.is_empty(), "{missing:?}");
    }

    #[test]
    fn missing_libraries_name_their_packages() {
        let mut shipped_by = BTreeMap::new();
        shipped_by.insert("libstdc++.so.6".to_string(), vec!["libstdc++6".to_string()]);
        let err = ElfCheckError::Dynamic {
            base: "static_base()".into(),
            offenders: vec![Offender {
                path: "/usr/local/bin/hello".into(),
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: vec!["libstdc++.so.6".into(), "libm.so.6".into()],
                search: Vec::new(),
                arch: Some("amd64".into()),
                step: None,
                location: None,
                missing: vec!["libstdc++.so.6".into(), "libm.so.6".into()],
                shipped_by,
                uncached: Vec::new(),
            }],
        };
        let msg = err.to_string();
        assert!(
            msg.contains("lacks `libstdc++.so.6` (in package `libstdc++6`), `libm.so.6`"),
            "{msg}"
        );
        let help = err.help().unwrap();
        assert!(help.contains("`libstdc++6`"), "{help}");
    }

    #[test]
    fn non_elf_is_not_checked() {
        assert_eq!(linkage(b"#!/bin/sh\necho hi\n"), Linkage::NotElf);
        assert_eq!(linkage(b""), Linkage::NotElf);
    }

    #[test]
    fn truncated_elf_is_malformed() {
        assert!(matches!(
            linkage(b"\x7fELF\x02\x01\x01"),
            Linkage::Malformed(_)
        ));
    }

    #[test]
    fn host_binaries() {
        // /bin/true is a dynamically linked PIE on Debian; busybox-static is
        // static (both installed on this machine and in CI).
        let t = std::fs::read("/bin/true").unwrap();
        match linkage(&t) {
            Linkage::Dynamic {
                interpreter,
                needed,
                ..
            } => {
                assert!(interpreter.unwrap().contains("ld-linux"));
                assert!(needed.iter().any(|n| n.starts_with("libc.so")));
            }
            other => panic!("/bin/true: {other:?}"),
        }
        let b = std::fs::read("/bin/busybox").unwrap();
        assert_eq!(linkage(&b), Linkage::Static);
        let host = kiln_types::Platform::host().architecture;
        assert_eq!(goarch(&t), Some(host.as_str()));
        assert_eq!(goarch(&b), Some(host.as_str()));
        assert_eq!(goarch(b"#!/bin/sh\n"), None);
    }

    /// Real programs of both machines (`tests/fixtures/elf/make.sh`).
    const AMD64_STATIC: &[u8] = include_bytes!("../tests/fixtures/elf/hello-amd64-static");
    const AMD64_DYNAMIC: &[u8] = include_bytes!("../tests/fixtures/elf/hello-amd64-dynamic");
    const ARM64_STATIC: &[u8] = include_bytes!("../tests/fixtures/elf/hello-arm64-static");
    const ARM64_DYNAMIC: &[u8] = include_bytes!("../tests/fixtures/elf/hello-arm64-dynamic");

    #[test]
    fn machine_of_real_programs() {
        for (bytes, arch, dynamic) in [
            (AMD64_STATIC, "amd64", false),
            (AMD64_DYNAMIC, "amd64", true),
            (ARM64_STATIC, "arm64", false),
            (ARM64_DYNAMIC, "arm64", true),
        ] {
            assert_eq!(goarch(bytes), Some(arch));
            // the header alone says as much as the whole file
            assert_eq!(head_goarch(&bytes[..64]), Some(arch));
            // and binfmt_misc's view of it is the one kiln builds per arch
            let h = elf_header(arch).unwrap();
            assert_eq!(&bytes[..7], &h[..7], "{arch}");
            assert_eq!(&bytes[18..20], &h[18..20], "{arch}");
            assert_eq!(
                matches!(linkage(bytes), Linkage::Dynamic { .. }),
                dynamic,
                "{arch}"
            );
        }
        match linkage(ARM64_DYNAMIC) {
            Linkage::Dynamic { interpreter, .. } => {
                assert_eq!(interpreter.as_deref(), Some("/lib/ld-linux-aarch64.so.1"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(head_goarch(b"#!/bin/sh\n"), None);
        assert_eq!(head_goarch(&ARM64_STATIC[..10]), None);
    }

    #[test]
    fn elf_headers_round_trip() {
        // every machine of the table is read back as itself, and the
        // table agrees with kiln-types' architectures
        for &(arch, ..) in MACHINES {
            let h = elf_header(arch).unwrap();
            let mut head = h.to_vec();
            head.resize(64, 0);
            // e_ehsize, so goblin takes it for a header
            let is_64 = h[4] == 2;
            let ehsize: u16 = if is_64 { 64 } else { 52 };
            let at = if is_64 { 52 } else { 40 };
            let b = if h[5] == 1 {
                ehsize.to_le_bytes()
            } else {
                ehsize.to_be_bytes()
            };
            head[at..at + 2].copy_from_slice(&b);
            let v: u32 = 1;
            let vb = if h[5] == 1 {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            head[20..24].copy_from_slice(&vb);
            assert_eq!(head_goarch(&head), Some(arch), "{arch}");
            assert!(
                kiln_types::platform::Arch::by_oci_name(arch).is_some(),
                "{arch}"
            );
        }
        assert_eq!(elf_header("sparc64"), None);
    }

    #[test]
    fn arch_compatibility() {
        assert!(arch_fits("amd64", "amd64"));
        assert!(arch_fits("386", "amd64"));
        assert!(!arch_fits("amd64", "arm64"));
        assert!(!arch_fits("arm64", "amd64"));
    }

    #[test]
    fn message_names_binary_interpreter_and_step() {
        let e = ElfCheckError::Dynamic {
            base: "static_base()".into(),
            offenders: vec![Offender {
                missing: Vec::new(),
                shipped_by: BTreeMap::new(),
                uncached: Vec::new(),
                path: "/usr/local/bin/hello".into(),
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: vec!["libc.so.6".into()],
                search: Vec::new(),
                arch: Some("amd64".into()),
                step: Some("app: copy".into()),
                location: Some(Location {
                    file: "Kilnfile".into(),
                    line: 3,
                    column: 5,
                }),
            }],
        };
        assert_eq!(
            e.to_string(),
            "`/usr/local/bin/hello` is dynamically linked (interpreter `/lib64/ld-linux-x86-64.so.2`, needs libc.so.6), copied by `app: copy` at Kilnfile:3:5\n\
             the image is rooted in `static_base()`, which has no dynamic loader or libc: it would not start"
        );
        let help = e.help().unwrap();
        for fix in ["CGO_ENABLED=0", "-static", "+crt-static", "allow_dynamic()"] {
            assert!(help.contains(fix), "{help}");
        }
    }

    #[test]
    fn arch_message_names_binary_arch_and_fix() {
        let e = ElfCheckError::Arch {
            platform: kiln_types::Platform::parse("linux/arm64").unwrap(),
            offenders: vec![Offender {
                missing: Vec::new(),
                shipped_by: BTreeMap::new(),
                uncached: Vec::new(),
                path: "/hello".into(),
                interpreter: None,
                needed: vec![],
                search: vec![],
                arch: Some("amd64".into()),
                step: Some("app: copy".into()),
                location: None,
            }],
        };
        assert_eq!(
            e.to_string(),
            "`/hello` is built for amd64, copied by `app: copy`\n\
             the image is for linux/arm64: it would fail with \"exec format error\""
        );
        let help = e.help().unwrap();
        for fix in ["GOARCH=arm64", "aarch64-unknown-linux-musl", "--platform"] {
            assert!(help.contains(fix), "{help}");
        }
    }
}
