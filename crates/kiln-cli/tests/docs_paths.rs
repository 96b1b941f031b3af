//! Every repository path the documentation names exists: relative links
//! and backticked paths under the repository's top-level directories, in
//! README.md, ARCHITECTURE.md, docs/*.md and the examples' READMEs and
//! demo scripts.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The documents checked: (path relative to the root, text).
fn documents() -> Vec<(PathBuf, String)> {
    let root = root();
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("ARCHITECTURE.md")];
    let mut dirs = vec![PathBuf::from("docs"), PathBuf::from("examples")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(root.join(&d)).unwrap() {
            let e = e.unwrap();
            let rel = d.join(e.file_name());
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                dirs.push(rel);
            } else if (d.starts_with("docs") && name.ends_with(".md"))
                || name.starts_with("README")
                || name.ends_with(".sh")
            {
                files.push(rel);
            }
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join(&f)).unwrap();
            (f, text)
        })
        .collect()
}

/// Path-like words: the targets of relative markdown links, and words
/// that start with a top-level directory of the repository.
fn mentioned(text: &str, tops: &[String]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    // [text](target): relative to the document
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            out.push((target.to_string(), true));
        }
    }
    // words naming repository paths: relative to the root
    for word in text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '`' | '(' | ')' | '"' | '\'' | ',' | ';' | '[' | ']' | '<' | '>' | '|' | '=' | '*'
            )
    }) {
        let word = word
            .split('#')
            .next()
            .unwrap_or("")
            .trim_end_matches(['.', ':']);
        let Some((top, _)) = word.split_once('/') else {
            continue;
        };
        if !tops.iter().any(|t| t == top) || word.contains(['{', '$', '<', '…']) {
            continue;
        }
        out.push((word.to_string(), false));
    }
    out
}

#[test]
fn every_path_the_documentation_names_exists() {
    let root = root();
    let tops: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".git" && n != "target")
        .collect();
    let mut missing = Vec::new();
    let mut seen = 0;
    for (doc, text) in documents() {
        for (path, relative) in mentioned(&text, &tops) {
            seen += 1;
            let base = if relative {
                root.join(doc.parent().unwrap())
            } else {
                root.clone()
            };
            // a glob names files that exist when its directory does
            let p = path.split(['*', '?']).next().unwrap();
            if !base.join(p).exists() {
                missing.push(format!("{}: `{path}`", doc.display()));
            }
        }
    }
    assert!(seen > 20, "the scan found only {seen} paths");
    assert!(
        missing.is_empty(),
        "paths named in the documentation that are not in the repository:\n{}",
        missing.join("\n")
    );
}
