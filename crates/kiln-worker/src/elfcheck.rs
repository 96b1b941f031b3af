//! The static/dynamic check: an image rooted in `static_base()` or
//! `scratch()` has no dynamic loader and no libc, so a dynamically linked
//! ELF binary copied into it fails at run time with a baffling "no such file
//! or directory" (the kernel cannot find its `PT_INTERP`). This module finds
//! such binaries before the image is exported.
//!
//! [`linkage`] is a pure function over a file's bytes (parsed with goblin).
//! [`check`] walks what the final image's copies brought in: each `copy`
//! is one file op that adds exactly one layer, so the layers of the file ops
//! on the final stage's chain are read back from the store and every ELF
//! file in them is inspected. Copies marked `allow_dynamic()` are skipped.

use std::collections::HashMap;
use std::io::Read;

use goblin::elf::Elf;
use kiln_dag::{Definition, Digest, FileAction, Location, Op, SourceOp, Vertex};
use kiln_oci::{Compression, Store};

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
    if !is_elf(bytes) {
        return Linkage::NotElf;
    }
    match Elf::parse(bytes) {
        Err(e) => Linkage::Malformed(e.to_string()),
        Ok(elf) => {
            let interpreter = elf.interpreter.map(str::to_string);
            let needed: Vec<String> = elf.libraries.iter().map(|s| s.to_string()).collect();
            if interpreter.is_none() && needed.is_empty() {
                Linkage::Static
            } else {
                Linkage::Dynamic {
                    interpreter,
                    needed,
                }
            }
        }
    }
}

/// A dynamically linked file a copy put into a static image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offender {
    /// Absolute path in the image.
    pub path: String,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    /// The copy step's name and Kilnfile location.
    pub step: Option<String>,
    pub location: Option<Location>,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfCheckError {
    #[error("{}", describe(base, offenders))]
    Dynamic {
        /// `static_base()` or `scratch()`.
        base: String,
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
            ElfCheckError::Dynamic { .. } => Some(FIX.to_string()),
            ElfCheckError::Layer { .. } => None,
        }
    }
}

/// The fix, for every toolchain the seeds mention.
pub const FIX: &str = "link it statically: Go `CGO_ENABLED=0 go build`, C/C++ `gcc -static`, \
Rust `RUSTFLAGS=\"-C target-feature=+crt-static\"` (or a musl target); \
or, when the image brings its own loader and libraries, mark the copy with `allow_dynamic()`";

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
        if let Some(step) = &o.step {
            s.push_str(&format!(", copied by `{step}`"));
        }
        if let Some(l) = &o.location {
            s.push_str(&format!(" at {l}"));
        }
    }
    s.push_str(&format!(
        "\nthe image is rooted in `{base}`, which has no dynamic loader or libc: {} would not start",
        if offenders.len() == 1 { "it" } else { "they" }
    ));
    s
}

/// The file ops of the final image's stage, nearest the root first, and the
/// source the stage starts from. `None` when the chain holds something other
/// than file ops (an exec, a merge): such an image is not assembled by
/// copies alone and is not checked.
fn stage_chain(def: &Definition) -> Option<(Vec<&Vertex>, &SourceOp)> {
    let by_digest: HashMap<Digest, &Vertex> = def.vertices.iter().map(|v| (v.digest, v)).collect();
    let mut chain = Vec::new();
    let mut cur = *by_digest.get(&def.root)?;
    loop {
        match &cur.op {
            Op::Source(s) => return Some((chain, s)),
            Op::File(_) => {
                chain.push(cur);
                cur = by_digest.get(cur.inputs.first()?)?;
            }
            Op::Exec(_) | Op::Merge(_) => return None,
        }
    }
}

/// Checks the final image (`root`, the solved result of `def`): when its
/// stage starts from `static_base()` or `scratch()`, every ELF file a copy
/// without `allow_dynamic()` brought in must be statically linked.
pub fn check(store: &Store, def: &Definition, root: &Ref) -> Result<(), ElfCheckError> {
    let Some((chain, source)) = stage_chain(def) else {
        return Ok(());
    };
    let base = match source {
        SourceOp::StaticBase { .. } => "static_base()",
        SourceOp::Scratch => "scratch()",
        _ => return Ok(()),
    };
    // Each file op added exactly one layer on top of the source's: the last
    // `chain.len()` layers of the result, in reverse order of `chain`.
    if root.layers.len() < chain.len() {
        return Ok(());
    }
    let mut offenders = Vec::new();
    for (v, layer) in chain.iter().zip(root.layers.iter().rev()) {
        let Op::File(f) = &v.op else { continue };
        let copies: Vec<bool> = f
            .actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy { allow_dynamic, .. } => Some(*allow_dynamic),
                _ => None,
            })
            .collect();
        if copies.is_empty() || copies.iter().any(|allow| *allow) {
            continue;
        }
        let step = v.meta.name.clone().unwrap_or_else(|| v.digest.short());
        for (path, interpreter, needed) in dynamic_in_layer_cached(store, layer, &step)? {
            offenders.push(Offender {
                path,
                interpreter,
                needed,
                step: v.meta.name.clone(),
                location: v.meta.location.clone(),
            });
        }
    }
    // Base-most copies first, as they appear in the Kilnfile.
    offenders.reverse();
    if offenders.is_empty() {
        Ok(())
    } else {
        Err(ElfCheckError::Dynamic {
            base: base.to_string(),
            offenders,
        })
    }
}

type Found = (String, Option<String>, Vec<String>);

const RECORD_KIND: &str = "elf-check";

/// [`dynamic_in_layer`], remembered per layer blob: a layer is immutable,
/// and a no-op rebuild must not decompress the image's binaries again.
fn dynamic_in_layer_cached(
    store: &Store,
    layer: &LayerRef,
    step: &str,
) -> Result<Vec<Found>, ElfCheckError> {
    let key = format!("elfcheck/v1/{}", layer.digest);
    if let Some(found) = store
        .get_record(RECORD_KIND, key.as_bytes())
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Vec<Found>>(&b).ok())
    {
        return Ok(found);
    }
    let found = dynamic_in_layer(store, layer, step)?;
    if let Ok(b) = serde_json::to_vec(&found) {
        // Losing the record only costs reading the layer again.
        let _ = store.put_record(RECORD_KIND, key.as_bytes(), &b);
    }
    Ok(found)
}

/// The dynamically linked ELF files in one layer blob.
fn dynamic_in_layer(
    store: &Store,
    layer: &LayerRef,
    step: &str,
) -> Result<Vec<Found>, ElfCheckError> {
    let lerr = |reason: String| ElfCheckError::Layer {
        digest: layer.digest.clone(),
        step: step.to_string(),
        reason,
    };
    let l = layer.to_layer().map_err(|e| lerr(e.to_string()))?;
    let f = store
        .open_blob(&l.digest)
        .map_err(|e| lerr(e.to_string()))?;
    let comp = Compression::from_media_type(&layer.media_type).map_err(|e| lerr(e.to_string()))?;
    let rd = comp.decoder(f).map_err(|e| lerr(e.to_string()))?;
    let mut ar = tar::Archive::new(rd);
    let mut found = Vec::new();
    for entry in ar.entries().map_err(|e| lerr(e.to_string()))? {
        let mut entry = entry.map_err(|e| lerr(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| lerr(e.to_string()))?;
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
                .map_err(|e| lerr(e.to_string()))?
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
            .map_err(|e| lerr(e.to_string()))?;
        match linkage(&bytes) {
            Linkage::Dynamic {
                interpreter,
                needed,
            } => found.push((path, interpreter, needed)),
            Linkage::Malformed(reason) => {
                tracing::debug!(%path, %reason, "not checking a malformed ELF file");
            }
            Linkage::NotElf | Linkage::Static => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            } => {
                assert!(interpreter.unwrap().contains("ld-linux"));
                assert!(needed.iter().any(|n| n.starts_with("libc.so")));
            }
            other => panic!("/bin/true: {other:?}"),
        }
        let b = std::fs::read("/bin/busybox").unwrap();
        assert_eq!(linkage(&b), Linkage::Static);
    }

    #[test]
    fn message_names_binary_interpreter_and_step() {
        let e = ElfCheckError::Dynamic {
            base: "static_base()".into(),
            offenders: vec![Offender {
                path: "/usr/local/bin/hello".into(),
                interpreter: Some("/lib64/ld-linux-x86-64.so.2".into()),
                needed: vec!["libc.so.6".into()],
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
}
