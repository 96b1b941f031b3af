//! BuildKit's frontend subrequests (`requestid` option): what `buildx build
//! --call targets|outline|check` ask instead of a build. The answers are
//! the JSON documents of BuildKit's `frontend/subrequests` packages
//! (`result.json`), a plain-text rendering (`result.txt`) and the request's
//! `version`, returned as result metadata without a reference.
//!
//! The frontend image announces them with the label
//! `moby.buildkit.frontend.caps=moby.buildkit.frontend.subrequests`
//! (`frontend/gateway/Kilnfile`); without it BuildKit refuses the call.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use kiln_frontend::outline::{doc_comment, location};
use kiln_frontend::span::{LineIndex, Span};
use serde_json::{Value, json};

pub const DESCRIBE: &str = "frontend.subrequests.describe";
pub const OUTLINE: &str = "frontend.outline";
pub const TARGETS: &str = "frontend.targets";
pub const LINT: &str = "frontend.lint";

/// The Kilnfile a subrequest is about.
pub struct Input<'a> {
    pub filename: &'a str,
    pub text: &'a str,
    pub opts: &'a kiln_frontend::Options,
}

/// The answer: metadata entries of the result.
pub type Answer = BTreeMap<String, Vec<u8>>;

/// Answers `request`; `None` for a request kiln does not know (BuildKit
/// then reports it as unsupported).
pub fn answer(request: &str, input: &Input<'_>) -> Option<Answer> {
    let (json, text, version) = match request {
        DESCRIBE => describe(),
        TARGETS => targets(input),
        OUTLINE => outline(input),
        LINT => lint(input),
        _ => return None,
    };
    let mut out = Answer::new();
    out.insert(
        "result.json".into(),
        serde_json::to_vec_pretty(&json).expect("json values serialize"),
    );
    out.insert("result.txt".into(), text.into_bytes());
    out.insert("version".into(), version.as_bytes().to_vec());
    if request == LINT {
        let failed =
            !json["warnings"].as_array().is_none_or(Vec::is_empty) || !json["buildError"].is_null();
        out.insert(
            "result.statuscode".into(),
            if failed { b"1".to_vec() } else { b"0".to_vec() },
        );
    }
    Some(out)
}

fn request(name: &str, description: &str, opts: &[(&str, &str)]) -> Value {
    json!({
        "name": name,
        "version": "1.0.0",
        "type": "rpc",
        "description": description,
        "opts": opts.iter().map(|(n, d)| json!({"name": n, "description": d})).collect::<Vec<_>>(),
        "inputs": null,
        "metadata": [{"name": "result.json", "description": ""}, {"name": "result.txt", "description": ""}],
        "refs": null,
    })
}

fn describe() -> (Value, String, &'static str) {
    let reqs = json!([
        request(
            OUTLINE,
            "List all parameters current build target supports",
            &[("target", "Target build stage")]
        ),
        request(TARGETS, "List all targets current build supports", &[]),
        request(LINT, "Lint a Kilnfile", &[("target", "Target build stage")]),
        request(DESCRIBE, "List available subrequest types", &[]),
    ]);
    let mut text = String::from("NAME\tVERSION\tDESCRIPTION\n");
    for r in reqs.as_array().expect("an array") {
        let _ = writeln!(
            text,
            "{}\t{}\t{}",
            r["name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("frontend."),
            r["version"].as_str().unwrap_or_default(),
            r["description"].as_str().unwrap_or_default()
        );
    }
    (reqs, text, "1.0.0")
}

/// A `pb.Location` as Go's encoding/json writes it: 1-based lines,
/// 0-based characters, zero values left out.
fn sources(input: &Input<'_>) -> Value {
    json!([base64::engine::general_purpose::STANDARD.encode(input.text)])
}

fn targets(input: &Input<'_>) -> (Value, String, &'static str) {
    let (file, _) = kiln_frontend::parse(input.text);
    let names = match kiln_frontend::compile(input.filename, input.text, input.opts) {
        Ok(c) => c.targets,
        Err(_) => file.items.iter().map(|i| i.name.name.clone()).collect(),
    };
    let idx = LineIndex::new(input.text);
    let last = names.last().cloned();
    let list: Vec<Value> = file
        .items
        .iter()
        .filter(|i| names.contains(&i.name.name))
        .map(|i| {
            let mut t = serde_json::Map::new();
            t.insert("name".into(), json!(i.name.name));
            if Some(&i.name.name) == last.as_ref() {
                t.insert("default".into(), json!(true));
            }
            let doc = doc_comment(input.text, i.span.start as usize, "//");
            if !doc.is_empty() {
                t.insert("description".into(), json!(doc));
            }
            t.insert("location".into(), location(&idx, input.text, i.name.span));
            Value::Object(t)
        })
        .collect();
    let mut text = String::from("TARGET\tDESCRIPTION\n");
    for t in &list {
        let name = t["name"].as_str().unwrap_or_default();
        let name = if t["default"] == json!(true) {
            format!("{name} (default)")
        } else {
            name.to_string()
        };
        let _ = writeln!(
            text,
            "{name}\t{}",
            t["description"].as_str().unwrap_or_default()
        );
    }
    (
        json!({"targets": list, "sources": sources(input)}),
        text,
        "1.0.0",
    )
}

fn outline(input: &Input<'_>) -> (Value, String, &'static str) {
    let o = kiln_frontend::outline::kilnfile(input.filename, input.text, input.opts);
    let mut json = o.to_json(input.text);
    json["sources"] = sources(input);
    (json, o.to_text(), "1.0.0")
}

/// kiln's checker as BuildKit's lint: its warnings, and the first error as
/// the `buildError`.
fn lint(input: &Input<'_>) -> (Value, String, &'static str) {
    let d = kiln_frontend::check(input.filename, input.text, input.opts);
    let idx = LineIndex::new(input.text);
    let loc = |span: Option<Span>| match span {
        Some(s) => {
            let mut l = location(&idx, input.text, s);
            l["sourceIndex"] = json!(0);
            l
        }
        None => json!({"sourceIndex": 0}),
    };
    let warnings: Vec<Value> = d
        .warnings()
        .map(|w| {
            let mut v = serde_json::Map::new();
            v.insert("ruleName".into(), json!(w.code));
            v.insert("description".into(), json!(w.message));
            if !w.help.is_empty() {
                v.insert("detail".into(), json!(format!("{}: {}", w.message, w.help)));
            } else {
                v.insert("detail".into(), json!(w.message));
            }
            v.insert("location".into(), loc(w.span));
            Value::Object(v)
        })
        .collect();
    let mut result = json!({
        "warnings": warnings,
        "sources": [{
            "filename": input.filename,
            "language": "Kilnfile",
            "data": base64::engine::general_purpose::STANDARD.encode(input.text),
        }],
    });
    if let Some(e) = d.errors().next() {
        result["buildError"] =
            json!({"message": d.summary_of(e).trim_end(), "location": loc(e.span)});
    }
    let mut text = String::new();
    for w in d.warnings() {
        text.push_str(&d.summary_of(w));
    }
    if let Some(e) = d.errors().next() {
        text.push_str(&d.summary_of(e));
    }
    (result, text, "1.0.0")
}
