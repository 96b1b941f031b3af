//! The library directories an image's `/etc/ld.so.conf` names, as
//! ldconfig(8) reads it: one directory a line, `#` comments, `include`
//! of glob patterns (relative ones against the including file's
//! directory), `hwcap` lines ignored. ld.so(8) does not read these files
//! itself: it searches the directories through `/etc/ld.so.cache`, which
//! ldconfig builds from them, so the ELF check counts them only when the
//! image has that cache.

use crate::elfcheck::normalize;
use crate::entrycheck::Index;

/// How deep `include`s nest before the rest is ignored (ldconfig has no
/// limit but a cycle would never end).
const MAX_DEPTH: usize = 8;

/// The directories `/etc/ld.so.conf` of `index` names, in order, each with
/// the file that names it.
pub fn directories(index: &Index) -> Vec<(String, String)> {
    let mut out = Vec::new();
    read(index, "/etc/ld.so.conf", 0, &mut out);
    out
}

fn read(index: &Index, file: &str, depth: usize, out: &mut Vec<(String, String)>) {
    let Some(text) = index.ld_so_conf(file) else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let here = file.rsplit_once('/').map_or("/", |(d, _)| d);
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("include") => {
                if depth >= MAX_DEPTH {
                    continue;
                }
                for pattern in words {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_string()
                    } else {
                        format!("{here}/{pattern}")
                    };
                    for f in glob(index, &pattern) {
                        read(index, &f, depth + 1, out);
                    }
                }
            }
            Some("hwcap") => {}
            _ => {
                // `DIR=TYPE` was libc5's library type
                let dir = line.split('=').next().unwrap_or(line).trim();
                if dir.starts_with('/') {
                    out.push((normalize(dir), file.to_string()));
                }
            }
        }
    }
}

/// The files `pattern` names (wildcards in its last component only, as
/// Debian's `include /etc/ld.so.conf.d/*.conf`), sorted as glob(3) sorts.
fn glob(index: &Index, pattern: &str) -> Vec<String> {
    let pattern = normalize(pattern);
    let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern.as_str()));
    let dir = if dir.is_empty() { "/" } else { dir };
    if !name.contains(['*', '?']) {
        return vec![pattern.clone()];
    }
    index
        .names_in(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.') && wildcard(name.as_bytes(), n.as_bytes()))
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect()
}

/// fnmatch(3) with `*` and `?` only.
fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(files: &[(&str, &str)]) -> Index {
        let mut b = tar::Builder::new(Vec::new());
        let mut dirs = std::collections::BTreeSet::new();
        for (path, _) in files {
            let mut d = std::path::Path::new(path);
            while let Some(p) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_path_buf());
                d = p;
            }
        }
        for d in dirs {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, &d, &[][..]).unwrap();
        }
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        let mut i = Index::default();
        i.add_layer(&b.into_inner().unwrap()[..]).unwrap();
        i
    }

    #[test]
    fn includes_globs_and_comments() {
        let i = index(&[
            (
                "etc/ld.so.conf",
                "include /etc/ld.so.conf.d/*.conf\n/srv/lib # old\n",
            ),
            (
                "etc/ld.so.conf.d/b.conf",
                "# b\n/opt/b/lib\nhwcap 0 nosegneg\n",
            ),
            (
                "etc/ld.so.conf.d/a.conf",
                "/opt/a//lib/\ninclude more/*.conf\n",
            ),
            ("etc/ld.so.conf.d/more/x.conf", "/opt/x\n"),
            ("etc/ld.so.conf.d/c.txt", "/not/read\n"),
        ]);
        let dirs: Vec<String> = directories(&i).into_iter().map(|(d, _)| d).collect();
        assert_eq!(dirs, ["/opt/a/lib", "/opt/x", "/opt/b/lib", "/srv/lib"]);
    }

    #[test]
    fn a_cycle_ends() {
        let i = index(&[("etc/ld.so.conf", "include /etc/ld.so.conf\n/l\n")]);
        assert_eq!(directories(&i).len(), MAX_DEPTH + 1);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard(b"*.conf", b"x86_64-linux-gnu.conf"));
        assert!(!wildcard(b"*.conf", b"x.conf.bak"));
        assert!(wildcard(b"a?c", b"abc"));
    }
}
