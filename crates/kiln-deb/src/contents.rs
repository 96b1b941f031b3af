//! The `Contents-<arch>` index: which package ships which file, to name
//! the package that would bring a library a binary lacks. Read only when
//! something is missing: the compressed index (12 MB for bookworm's main
//! on amd64) is fetched by the SHA256 the verified `Release` gives, kept in
//! the content store under it, and scanned as a stream.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};

use kiln_store::Store;

use crate::fetch::Fetcher;
use crate::install::MERGED;
use crate::repo::{RepoError, Repository};
use crate::source::Source;

/// `path` (absolute or relative) as the key [`shipped_by`] matches on:
/// relative, lexically clean, with bookworm's merged /usr applied
/// (`lib/x86_64-linux-gnu/libc.so.6` and `/usr/lib/x86_64-linux-gnu/libc.so.6`
/// are one file in an image).
pub fn contents_key(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.first().is_some_and(|f| MERGED.contains(f)) {
        parts.insert(0, "usr");
    }
    parts.join("/")
}

/// The packages that ship each of `paths` (keys made by [`contents_key`])
/// according to the repository's `Contents-<arch>` index of every
/// component; paths no package ships are absent from the answer.
pub async fn shipped_by(
    source: &Source,
    fetcher: &Fetcher,
    store: &Store,
    paths: &BTreeSet<String>,
) -> Result<BTreeMap<String, BTreeSet<String>>, RepoError> {
    let release = Repository::release(source, fetcher, store).await?;
    let rel_url = source.dists_url("Release");
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for component in &source.components {
        let name = format!("{component}/Contents-{}.gz", source.arch);
        let entry = release.entry(&rel_url, &name)?.clone();
        let url = if release.by_hash {
            source.dists_url(&format!(
                "{component}/by-hash/SHA256/{}",
                entry.sha256.hex()
            ))
        } else {
            source.dists_url(&name)
        };
        fetcher
            .get_into_store(&url, store, &entry.sha256, entry.size)
            .await?;
        let file = std::fs::File::open(store.blob_path(&entry.sha256)).map_err(|source| {
            RepoError::Contents {
                url: url.clone(),
                source,
            }
        })?;
        let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
        scan(BufReader::with_capacity(1 << 20, gz), paths, &mut found).map_err(|source| {
            RepoError::Contents {
                url: url.clone(),
                source,
            }
        })?;
    }
    Ok(found)
}

/// Reads `Contents` lines (`PATH  SECTION/PACKAGE,SECTION/PACKAGE`; the
/// path may hold spaces, the package list does not) and keeps those whose
/// path is one of `paths`.
fn scan(
    mut r: impl BufRead,
    paths: &BTreeSet<String>,
    found: &mut BTreeMap<String, BTreeSet<String>>,
) -> std::io::Result<()> {
    // the file names wanted: most lines are rejected on them alone
    let names: BTreeSet<&str> = paths
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or(p))
        .collect();
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let text = text.trim_end();
        let Some((path, list)) = text.rsplit_once(|c: char| c.is_ascii_whitespace()) else {
            continue;
        };
        let path = path.trim_end();
        if !names.contains(path.rsplit('/').next().unwrap_or(path)) {
            continue;
        }
        let key = contents_key(path);
        if !paths.contains(&key) {
            continue;
        }
        let set = found.entry(key).or_default();
        for p in list.split(',') {
            let p = p.rsplit('/').next().unwrap_or(p).trim();
            if !p.is_empty() {
                set.insert(p.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_merged_usr() {
        assert_eq!(
            contents_key("/lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            contents_key("usr/lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            contents_key("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(contents_key("/opt/./x/../y"), "opt/y");
    }

    #[test]
    fn lines_are_matched_by_path() {
        let text = "\
lib/x86_64-linux-gnu/libc.so.6                          libs/libc6
usr/lib/x86_64-linux-gnu/libstdc++.so.6                 libs/libstdc++6
usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30            libs/libstdc++6
usr/share/doc/a file with spaces/libc.so.6              doc/x
usr/lib/x86_64-linux-gnu/libz.so.1                      libs/zlib1g,oldlibs/zlib1g-compat
";
        let paths: BTreeSet<String> = [
            "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libstdc++.so.6",
            "usr/lib/x86_64-linux-gnu/libz.so.1",
            "usr/lib/x86_64-linux-gnu/libnone.so.1",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let mut found = BTreeMap::new();
        scan(text.as_bytes(), &paths, &mut found).unwrap();
        let got: Vec<(String, Vec<String>)> = found
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "usr/lib/x86_64-linux-gnu/libc.so.6".to_string(),
                    vec!["libc6".to_string()]
                ),
                (
                    "usr/lib/x86_64-linux-gnu/libstdc++.so.6".to_string(),
                    vec!["libstdc++6".to_string()]
                ),
                (
                    "usr/lib/x86_64-linux-gnu/libz.so.1".to_string(),
                    vec!["zlib1g".to_string(), "zlib1g-compat".to_string()]
                ),
            ]
        );
    }
}
