//! Platforms (`os/arch[/variant]`) in OCI terms: the one table of
//! architectures (the Go/OCI name, Rust's name for the host, aliases) and
//! containerd's normalization (`platforms.Normalize`), so `linux/aarch64`,
//! `linux/arm64/v8` and `linux/arm64` are one platform and `linux/arm`
//! means `linux/arm/v7`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One architecture: its OCI (GOARCH) name and how others spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// The name in image configs and indexes, e.g. `amd64`.
    pub oci: &'static str,
    /// `std::env::consts::ARCH` of a host of this architecture.
    pub rust: &'static str,
    /// Byte order, where Rust's name covers both (`powerpc64`, `mips64`).
    pub little_endian: bool,
    /// The name of qemu-user's binfmt_misc handler (`qemu-<name>`).
    pub qemu: &'static str,
    /// Debian's architecture name (`dpkg --print-architecture`); for `arm`
    /// the v7 one (`armhf`), [`Platform::debian_arch`] knows the others.
    pub debian: &'static str,
}

/// Every architecture kiln names. Lookups by OCI name, Rust name and
/// qemu name all go through this table.
pub const ARCHES: &[Arch] = &[
    arch("amd64", "x86_64", true, "x86_64", "amd64"),
    arch("arm64", "aarch64", true, "aarch64", "arm64"),
    arch("arm", "arm", true, "arm", "armhf"),
    arch("386", "x86", true, "i386", "i386"),
    arch("ppc64le", "powerpc64", true, "ppc64le", "ppc64el"),
    arch("ppc64", "powerpc64", false, "ppc64", "ppc64"),
    arch("s390x", "s390x", false, "s390x", "s390x"),
    arch("riscv64", "riscv64", true, "riscv64", "riscv64"),
    arch("mips64le", "mips64", true, "mips64el", "mips64el"),
    arch("mips64", "mips64", false, "mips64", "mips64"),
    arch("mipsle", "mips", true, "mipsel", "mipsel"),
    arch("mips", "mips", false, "mips", "mips"),
    arch("loong64", "loongarch64", true, "loongarch64", "loong64"),
];

const fn arch(
    oci: &'static str,
    rust: &'static str,
    little_endian: bool,
    qemu: &'static str,
    debian: &'static str,
) -> Arch {
    Arch {
        oci,
        rust,
        little_endian,
        qemu,
        debian,
    }
}

impl Arch {
    /// The row of an OCI architecture name.
    pub fn by_oci_name(name: &str) -> Option<&'static Arch> {
        ARCHES.iter().find(|a| a.oci == name)
    }
}

/// A target platform, e.g. `linux/amd64` or `linux/arm/v7`. The fields are
/// as given; [`Platform::normalized`] (which parsing applies) gives the
/// canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// A string that is not `os/arch[/variant]`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error(
    "invalid platform `{input}`: expected `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64` or `linux/arm/v7`"
)]
pub struct PlatformError {
    pub input: String,
}

impl Platform {
    /// A platform as given (not normalized).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]` and normalizes it.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(PlatformError {
                input: s.to_string(),
            });
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()).normalized())
    }

    /// This machine's platform: `linux` and the OCI name of
    /// `std::env::consts::ARCH` (`x86_64` is `amd64`, little-endian
    /// `powerpc64` is `ppc64le`), normalized (`arm` is `arm/v7`).
    pub fn host() -> Platform {
        let little = cfg!(target_endian = "little");
        let arch = ARCHES
            .iter()
            .find(|a| a.rust == std::env::consts::ARCH && a.little_endian == little)
            .map_or(std::env::consts::ARCH, |a| a.oci);
        Platform::new("linux", arch, None).normalized()
    }

    /// The canonical form, as containerd's `platforms.Normalize`: lower
    /// case, OCI architecture names (`x86_64` is `amd64`, `aarch64` is
    /// `arm64`, `armhf` is `arm/v7`), `arm64`'s `v8` left out, `arm`'s
    /// version defaulting to `v7`.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            os => os.to_string(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase);
        let (arch, variant) = match (arch.as_str(), variant.as_deref()) {
            ("i386", _) => ("386", None),
            ("x86_64" | "x86-64" | "amd64", Some("v1")) => ("amd64", None),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
            ("aarch64" | "arm64", Some("8" | "v8" | "v8.0")) => ("arm64", None),
            ("aarch64" | "arm64", Some("9" | "9.0" | "v9.0")) => ("arm64", Some("v9")),
            ("aarch64" | "arm64", v) => ("arm64", v),
            ("armhf", _) => ("arm", Some("v7")),
            ("armel", _) => ("arm", Some("v6")),
            ("arm", None | Some("7")) => ("arm", Some("v7")),
            ("arm", Some(v @ ("5" | "6" | "8"))) => {
                return Platform {
                    os,
                    architecture: "arm".to_string(),
                    variant: Some(format!("v{v}")),
                };
            }
            (a, v) => (a, v),
        };
        Platform {
            os,
            architecture: arch.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an image for `candidate` (an index entry) serves this
    /// platform. Both are normalized first; a variant left out on either
    /// side matches any (an `arm64` request takes any `arm64` image).
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.normalized();
        let have = candidate.normalized();
        want.os == have.os
            && want.architecture == have.architecture
            && match (&want.variant, &have.variant) {
                (Some(w), Some(h)) => w == h,
                _ => true,
            }
    }

    /// The row of this platform's architecture in [`ARCHES`].
    pub fn arch(&self) -> Option<&'static Arch> {
        Arch::by_oci_name(&self.normalized().architecture)
    }

    /// Debian's name for this platform's architecture, as apt repositories
    /// and `.deb`s spell it: `amd64`, `arm64`, `armhf` (arm/v7), `armel`
    /// (arm/v5 and v6), `i386`, `ppc64el`, ... `None` for an OS other than
    /// Linux or an architecture outside the table.
    pub fn debian_arch(&self) -> Option<&'static str> {
        let p = self.normalized();
        if p.os != "linux" {
            return None;
        }
        let row = p.arch()?;
        match (row.oci, p.variant.as_deref()) {
            ("arm", Some("v5" | "v6")) => Some("armel"),
            _ => Some(row.debian),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("linux/amd64", Some("linux/amd64")),
            ("linux/x86_64", Some("linux/amd64")),
            ("linux/x86-64", Some("linux/amd64")),
            ("linux/amd64/v1", Some("linux/amd64")),
            ("linux/amd64/v3", Some("linux/amd64/v3")),
            ("linux/arm64", Some("linux/arm64")),
            ("linux/aarch64", Some("linux/arm64")),
            ("linux/arm64/v8", Some("linux/arm64")),
            ("linux/arm64/8", Some("linux/arm64")),
            ("linux/arm64/v9.0", Some("linux/arm64/v9")),
            ("linux/arm", Some("linux/arm/v7")),
            ("linux/arm/7", Some("linux/arm/v7")),
            ("linux/arm/v7", Some("linux/arm/v7")),
            ("linux/arm/v6", Some("linux/arm/v6")),
            ("linux/arm/6", Some("linux/arm/v6")),
            ("linux/armhf", Some("linux/arm/v7")),
            ("linux/armel", Some("linux/arm/v6")),
            ("linux/i386", Some("linux/386")),
            ("linux/386", Some("linux/386")),
            ("linux/ppc64le", Some("linux/ppc64le")),
            ("linux/s390x", Some("linux/s390x")),
            ("linux/riscv64", Some("linux/riscv64")),
            ("linux/mips64le", Some("linux/mips64le")),
            ("linux/loong64", Some("linux/loong64")),
            ("Linux/AMD64", Some("linux/amd64")),
            ("windows/amd64", Some("windows/amd64")),
            ("linux", None),
            ("arm64", None),
            ("linux/", None),
            ("/amd64", None),
            ("a/b/c/d", None),
            ("linux/am d64", None),
            (" linux/amd64", None),
            ("", None),
        ];
        for (input, want) in cases {
            let got = Platform::parse(input).map(|p| p.to_string()).ok();
            assert_eq!(got.as_deref(), *want, "{input}");
        }
    }

    #[test]
    fn match_table() {
        // (wanted, index entry, match)
        let cases = [
            ("linux/amd64", "linux/amd64", true),
            ("linux/amd64", "linux/arm64", false),
            ("linux/amd64", "windows/amd64", false),
            ("linux/arm64", "linux/arm64/v8", true),
            ("linux/arm64/v8", "linux/arm64", true),
            ("linux/arm64/v8", "linux/arm64/v8", true),
            ("linux/arm64/v9", "linux/arm64/v9", true),
            ("linux/arm/v7", "linux/arm/v7", true),
            ("linux/arm/v7", "linux/arm/v6", false),
            ("linux/arm", "linux/arm/v6", false),
            ("linux/arm", "linux/arm/v7", true),
            ("linux/arm/v6", "linux/arm/v6", true),
            ("linux/386", "linux/386", true),
        ];
        for (want, have, ok) in cases {
            let w: Platform = want.parse().unwrap();
            let h = Platform::parse(have).unwrap();
            assert_eq!(w.matches(&h), ok, "{want} vs {have}");
        }
        // Index entries are matched as written, normalized on the way.
        let raw = Platform::new("linux", "arm64", Some("v8"));
        assert!(Platform::parse("linux/arm64").unwrap().matches(&raw));
        let raw = Platform::new("linux", "arm", None);
        assert!(Platform::parse("linux/arm/v7").unwrap().matches(&raw));
    }

    #[test]
    fn host_comes_from_the_table() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(host, host.normalized());
        let row = host.arch().expect("the build host is in the table");
        assert_eq!(row.rust, std::env::consts::ARCH);
        // Each OCI name kiln documents is in the table once.
        for name in [
            "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
        ] {
            assert_eq!(ARCHES.iter().filter(|a| a.oci == name).count(), 1, "{name}");
        }
        // Rust names are unique per byte order.
        for a in ARCHES {
            let same = ARCHES
                .iter()
                .filter(|b| b.rust == a.rust && b.little_endian == a.little_endian);
            assert_eq!(same.count(), 1, "{}", a.rust);
        }
    }

    #[test]
    fn debian_names() {
        let cases = [
            ("linux/amd64", Some("amd64")),
            ("linux/arm64", Some("arm64")),
            ("linux/arm/v7", Some("armhf")),
            ("linux/arm/v6", Some("armel")),
            ("linux/386", Some("i386")),
            ("linux/ppc64le", Some("ppc64el")),
            ("linux/s390x", Some("s390x")),
            ("linux/riscv64", Some("riscv64")),
            ("linux/mips64le", Some("mips64el")),
            ("windows/amd64", None),
            ("linux/sparc64", None),
        ];
        for (platform, want) in cases {
            let p = Platform::parse(platform).unwrap();
            assert_eq!(p.debian_arch(), want, "{platform}");
        }
    }

    #[test]
    fn serializes_as_fields() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"os":"linux","architecture":"arm","variant":"v7"}"#
        );
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"os":"linux","architecture":"amd64","variant":null}"#
        );
    }
}
