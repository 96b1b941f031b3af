//! What an ELF executable says about how it was built: Go's build info
//! (the `.go.buildinfo` section: a 16-byte header of the magic
//! `\xff Go buildinf:`, the pointer size and flags, then, since Go 1.18,
//! the Go version and the module info as varint-prefixed strings) and
//! `cargo auditable`'s dependency list (the `.dep-v0` section, zlib-compressed
//! JSON). Binaries that carry neither are still files with their digests.

use std::io::Read;

use goblin::elf::Elf;

const GO_MAGIC: &[u8] = b"\xff Go buildinf:";
/// The build info header is 32 bytes, aligned to 16 (debug/buildinfo).
const GO_HEADER: usize = 32;
const GO_ALIGN: usize = 16;
/// Flag bit 2: the strings follow the header (Go 1.18+), not pointers.
const GO_INLINE: u8 = 0x2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryInfo {
    pub go: Option<GoBuildInfo>,
    pub rust: Option<Vec<CargoPackage>>,
    /// why a section that was there could not be read
    pub problem: Option<String>,
}

/// A Go module: path, version, `h1:` sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoModule {
    pub path: String,
    pub version: String,
    pub sum: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// `go1.22.2`
    pub go_version: String,
    /// the main package's import path
    pub path: Option<String>,
    pub main: Option<GoModule>,
    pub deps: Vec<GoModule>,
    /// `build` settings (`GOOS=linux`, `-ldflags=...`), in the binary's order
    pub settings: Vec<(String, String)>,
}

/// One crate of `cargo auditable`'s list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct CargoPackage {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub dependencies: Vec<usize>,
    #[serde(default)]
    pub root: bool,
}

#[derive(serde::Deserialize)]
struct Auditable {
    packages: Vec<CargoPackage>,
}

/// Reads the build info an ELF file carries. Never fails: an unreadable
/// section leaves a `problem` and the file is still listed.
pub fn inspect(bytes: &[u8]) -> BinaryInfo {
    let mut info = BinaryInfo::default();
    let elf = match Elf::parse(bytes) {
        Ok(e) => e,
        Err(e) => {
            info.problem = Some(format!("not a readable ELF file: {e}"));
            return info;
        }
    };
    for sh in &elf.section_headers {
        let Some(name) = elf.shdr_strtab.get_at(sh.sh_name) else {
            continue;
        };
        let Some(range) = sh.file_range() else {
            continue;
        };
        let Some(data) = bytes.get(range) else {
            continue;
        };
        match name {
            ".go.buildinfo" => match go_build_info(data) {
                Ok(g) => info.go = Some(g),
                Err(p) => info.problem = Some(p),
            },
            ".dep-v0" => match auditable(data) {
                Ok(r) => info.rust = Some(r),
                Err(p) => info.problem = Some(p),
            },
            _ => {}
        }
    }
    info
}

fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, b) in data.iter().enumerate().take(10) {
        x |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

fn go_string(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let (len, n) = uvarint(data.get(at..)?)?;
    let start = at + n;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    Some((data.get(start..end)?, end))
}

/// Parses the `.go.buildinfo` section's bytes.
pub fn go_build_info(section: &[u8]) -> Result<GoBuildInfo, String> {
    let at = (0..section.len())
        .step_by(GO_ALIGN)
        .find(|&i| section[i..].starts_with(GO_MAGIC))
        .ok_or("`.go.buildinfo` has no build info magic")?;
    let data = &section[at..];
    if data.len() < GO_HEADER {
        return Err("`.go.buildinfo` is truncated".into());
    }
    let flags = data[15];
    if flags & GO_INLINE == 0 {
        return Err("Go build info from before Go 1.18 (pointer format) is not read".into());
    }
    let (go_version, next) =
        go_string(data, GO_HEADER).ok_or("`.go.buildinfo`: bad version string")?;
    let go_version = String::from_utf8_lossy(go_version).into_owned();
    let (mut modinfo, _) = go_string(data, next).ok_or("`.go.buildinfo`: bad module info")?;
    // the module info is framed by two 16-byte sentinels (runtime/debug),
    // which are not UTF-8: cut them off the bytes
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let modinfo = String::from_utf8_lossy(modinfo);
    let mut info = GoBuildInfo {
        go_version,
        path: None,
        main: None,
        deps: Vec::new(),
        settings: Vec::new(),
    };
    let module = |f: &[&str]| GoModule {
        path: f.get(1).copied().unwrap_or_default().to_string(),
        version: f.get(2).copied().unwrap_or_default().to_string(),
        sum: f.get(3).filter(|s| !s.is_empty()).map(|s| s.to_string()),
    };
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "path" => info.path = f.get(1).map(|s| s.to_string()),
            "mod" => info.main = Some(module(&f)),
            "dep" => info.deps.push(module(&f)),
            // a replacement of the module on the line before
            "=>" => {
                if let Some(d) = info.deps.last_mut() {
                    *d = module(&f);
                }
            }
            "build" => {
                if let Some((k, v)) = f.get(1).and_then(|kv| kv.split_once('=')) {
                    info.settings.push((k.to_string(), v.to_string()));
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

/// Parses the `.dep-v0` section's bytes.
pub fn auditable(section: &[u8]) -> Result<Vec<CargoPackage>, String> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(16 << 20)
        .read_to_end(&mut json)
        .map_err(|e| format!("`.dep-v0` is not zlib data: {e}"))?;
    let a: Auditable = serde_json::from_slice(&json)
        .map_err(|e| format!("`.dep-v0` is not cargo auditable's JSON: {e}"))?;
    Ok(a.packages)
}
