//! Reading a `.deb`: an `ar` archive of `debian-binary`, `control.tar[.*]`
//! and `data.tar[.*]` (deb(5)), decompressed with the crate for each
//! format.

use std::io::{self, Read};

/// A `.deb` that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("`{deb}` is not a Debian package: {reason}")]
    Format { deb: String, reason: String },
    #[error("cannot read `{deb}`")]
    Read {
        deb: String,
        #[source]
        source: io::Error,
    },
    #[error("`{deb}`: member `{member}` is compressed in a way kiln does not read")]
    Compression { deb: String, member: String },
}

/// The control part of a package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The `Package` field, checked to be a package name.
    pub package: String,
    /// The `control` file as the package ships it.
    pub control: String,
    /// The `md5sums` file, when the package has one.
    pub md5sums: Option<Vec<u8>>,
}

/// The largest control member read into memory.
const MAX_CONTROL: u64 = 64 << 20;

fn decoder<'a>(
    deb: &str,
    member: &str,
    suffix: &str,
    r: impl Read + 'a,
) -> Result<Box<dyn Read + 'a>, DebError> {
    Ok(match suffix {
        "" => Box::new(r),
        ".gz" => Box::new(flate2::read::MultiGzDecoder::new(r)),
        ".xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        ".zst" => {
            Box::new(
                zstd::stream::read::Decoder::new(r).map_err(|source| DebError::Read {
                    deb: deb.to_string(),
                    source,
                })?,
            )
        }
        _ => {
            return Err(DebError::Compression {
                deb: deb.to_string(),
                member: member.to_string(),
            });
        }
    })
}

fn valid_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// Reads the package `deb` (a label for messages) from `input`: its
/// control part, then hands the decompressed data tar to `data`.
pub fn read_deb<R: Read, T>(
    deb: &str,
    input: R,
    data: impl FnOnce(&Control, &mut dyn Read) -> Result<T, DebError>,
) -> Result<(Control, T), DebError> {
    let format = |reason: &str| DebError::Format {
        deb: deb.to_string(),
        reason: reason.to_string(),
    };
    let rerr = |source| DebError::Read {
        deb: deb.to_string(),
        source,
    };
    let mut ar = ar::Archive::new(input);
    let mut first = true;
    let mut control: Option<Control> = None;
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.map_err(|e| {
            if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
                format(&format!("bad ar archive: {e}"))
            } else {
                rerr(e)
            }
        })?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if first {
            first = false;
            let mut v = Vec::new();
            (&mut entry).take(64).read_to_end(&mut v).map_err(rerr)?;
            if name != "debian-binary" || !v.starts_with(b"2.") {
                return Err(format("it does not start with `debian-binary` 2.x"));
            }
            continue;
        }
        if let Some(suffix) = name.strip_prefix("control.tar") {
            let r = decoder(deb, &name, suffix, &mut entry)?;
            control = Some(read_control(deb, r)?);
        } else if let Some(suffix) = name.strip_prefix("data.tar") {
            let Some(c) = control.take() else {
                return Err(format("`data.tar` comes before `control.tar`"));
            };
            let mut r = decoder(deb, &name, suffix, &mut entry)?;
            let out = data(&c, &mut r)?;
            return Ok((c, out));
        }
        // other members (`_gpgorigin`, ...) are not part of what is installed
    }
    Err(format(if first {
        "it is empty or not an ar archive"
    } else {
        "it has no `data.tar` member (truncated?)"
    }))
}

fn read_control(deb: &str, r: impl Read) -> Result<Control, DebError> {
    let format = |reason: String| DebError::Format {
        deb: deb.to_string(),
        reason,
    };
    let mut tar = tar::Archive::new(r);
    let mut control = None;
    let mut md5sums = None;
    let entries = tar
        .entries()
        .map_err(|e| format(format!("bad control tar: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| format(format!("bad control tar: {e}")))?;
        let path = e.path_bytes().into_owned();
        let name = path.strip_prefix(b"./").unwrap_or(&path).to_vec();
        let mut buf = Vec::new();
        match name.as_slice() {
            b"control" | b"md5sums" => {
                (&mut e)
                    .take(MAX_CONTROL)
                    .read_to_end(&mut buf)
                    .map_err(|e| format(format!("bad control tar: {e}")))?;
            }
            _ => continue,
        }
        if name == b"control" {
            control =
                Some(String::from_utf8(buf).map_err(|_| format("`control` is not UTF-8".into()))?);
        } else {
            md5sums = Some(buf);
        }
    }
    let control = control.ok_or_else(|| format("no `control` file".into()))?;
    let package = control
        .lines()
        .find_map(|l| l.strip_prefix("Package:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if !valid_package_name(&package) {
        return Err(format(format!(
            "`Package: {package}` is not a package name"
        )));
    }
    Ok(Control {
        package,
        control,
        md5sums,
    })
}
