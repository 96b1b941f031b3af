//! Package records as package managers leave them in a filesystem: dpkg's
//! status database (one file, or distroless' `status.d/` with a file per
//! package), Python's `*.dist-info/METADATA` (RFC 822 headers) and npm's
//! `package.json`, plus `/etc/os-release` for the distribution's name.

use std::collections::BTreeMap;

/// One installed Debian package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// the source package, when it differs from the binary's name
    pub source: Option<String>,
    pub maintainer: Option<String>,
}

/// RFC 822 style paragraphs: `Key: value` lines, continuation lines start
/// with a space, paragraphs separated by blank lines.
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(k) = &last
                && let Some(v) = cur.get_mut(k)
            {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_string();
            cur.entry(k.clone()).or_insert_with(|| v.trim().to_string());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The installed packages of a dpkg status file (`Status: ... installed`;
/// status.d files have no `Status` and are all installed).
pub fn dpkg_status(text: &str) -> Vec<DebPackage> {
    paragraphs(text)
        .into_iter()
        .filter(|p| p.get("Status").is_none_or(|s| s.ends_with(" installed")))
        .filter_map(|p| {
            Some(DebPackage {
                name: p.get("Package")?.clone(),
                version: p.get("Version")?.clone(),
                arch: p.get("Architecture").cloned(),
                // `Source: name (version)` when the versions differ
                source: p
                    .get("Source")
                    .map(|s| s.split_whitespace().next().unwrap_or_default().to_string()),
                maintainer: p.get("Maintainer").cloned(),
            })
        })
        .collect()
}

/// A Python distribution (or an npm package).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPackage {
    pub name: String,
    pub version: String,
    pub license: Option<String>,
    pub author: Option<String>,
}

/// `*.dist-info/METADATA`: the headers before the first blank line.
pub fn python_metadata(text: &str) -> Option<NamedPackage> {
    let header = text.split("\n\n").next().unwrap_or_default();
    let p = paragraphs(header).into_iter().next()?;
    Some(NamedPackage {
        name: p.get("Name")?.clone(),
        version: p.get("Version")?.clone(),
        license: p
            .get("License-Expression")
            .or_else(|| p.get("License"))
            .filter(|l| !l.is_empty() && l.as_str() != "UNKNOWN")
            .map(|l| l.lines().next().unwrap_or_default().to_string()),
        author: p.get("Author").cloned(),
    })
}

/// `node_modules/NAME/package.json` (or `@scope/NAME`): a package needs a
/// name and a version; other `package.json` files (test fixtures inside a
/// package) lack one or the other.
pub fn npm_package(text: &str) -> Option<NamedPackage> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let license = match v.get("license") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(o)) => {
            o.get("type").and_then(|t| t.as_str()).map(str::to_string)
        }
        _ => None,
    };
    let author = match v.get("author") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(o)) => {
            o.get("name").and_then(|t| t.as_str()).map(str::to_string)
        }
        _ => None,
    };
    Some(NamedPackage {
        name: v.get("name")?.as_str()?.to_string(),
        version: v.get("version")?.as_str()?.to_string(),
        license,
        author,
    })
}

/// Whether `path` is a package's own `package.json`, directly inside
/// `node_modules/NAME/` or `node_modules/@scope/NAME/`.
pub fn is_npm_manifest(path: &str) -> bool {
    let Some(dir) = path.strip_suffix("/package.json") else {
        return false;
    };
    let Some((before, pkg)) = dir.rsplit_once("/node_modules/") else {
        return false;
    };
    let _ = before;
    match pkg.split('/').collect::<Vec<_>>().as_slice() {
        [name] => !name.starts_with('@') && !name.starts_with('.'),
        [scope, _] => scope.starts_with('@'),
        _ => false,
    }
}

/// `/etc/os-release`: `KEY=value` lines, values possibly quoted.
pub fn os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_skips_removed_packages_and_keeps_continuations_out_of_values() {
        let text = "Package: a\nStatus: install ok installed\nVersion: 1:2.0-1\nArchitecture: amd64\nDescription: x\n more\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: c\nSource: csrc (1.0)\nVersion: 1.0+b1\n";
        let p = dpkg_status(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "a");
        assert_eq!(p[0].version, "1:2.0-1");
        assert_eq!(p[1].source.as_deref(), Some("csrc"));
    }

    #[test]
    fn npm_manifests_are_only_package_roots() {
        assert!(is_npm_manifest("/app/node_modules/left-pad/package.json"));
        assert!(is_npm_manifest("/app/node_modules/@scope/x/package.json"));
        assert!(is_npm_manifest(
            "/app/node_modules/a/node_modules/b/package.json"
        ));
        assert!(!is_npm_manifest("/app/node_modules/a/test/package.json"));
        assert!(!is_npm_manifest("/app/package.json"));
    }
}
