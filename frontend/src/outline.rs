//! A build's outline, as BuildKit's `frontend.outline` subrequest answers it
//! and `buildx build --call outline` prints it: the target, the build args
//! with their defaults and descriptions, and the secrets, SSH agents and
//! cache mounts its steps use. One model for Kilnfiles and Dockerfiles,
//! rendered here for the CLI (`kiln build --call outline[,format=json]`)
//! and the gateway frontend alike.
//!
//! The JSON is BuildKit's `frontend/subrequests/outline` `Outline` (field
//! names and `omitempty` as there; the gateway adds `sources`); the text is
//! its `PrintOutline`: tab-separated columns, aligned.

use std::fmt::Write as _;

use kiln_dag::{Definition, MountKind, Op};
use serde_json::{Value, json};

use crate::ast::{Expr, ExprKind};
use crate::span::{LineIndex, Span};

/// What `--call outline` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outline {
    /// The target built without `--target`, or the one named.
    pub name: Option<String>,
    pub description: Option<String>,
    pub args: Vec<Arg>,
    pub secrets: Vec<Use>,
    pub ssh: Vec<Use>,
    /// Cache mount ids.
    pub cache: Vec<String>,
}

/// A build arg: its default (`None`: no default) and the comment above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub value: Option<String>,
    pub description: Option<String>,
    /// Where it is declared, as a byte span of the build file.
    pub span: Option<Span>,
}

/// A secret or SSH agent id the target's steps mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub id: String,
    /// Whether one of its mounts requires it.
    pub required: bool,
}

impl Outline {
    /// The secrets, SSH agents and cache mounts of `def`'s steps, each id
    /// once (required if any mount requires it), in the order first met.
    pub fn add_uses(&mut self, def: &Definition) {
        fn add(list: &mut Vec<Use>, id: &str, required: bool) {
            match list.iter_mut().find(|u| u.id == id) {
                Some(u) => u.required |= required,
                None => list.push(Use {
                    id: id.to_string(),
                    required,
                }),
            }
        }
        for v in &def.vertices {
            let Op::Exec(x) = &v.op else { continue };
            for m in &x.mounts {
                match &m.kind {
                    MountKind::Secret { id, required, .. }
                    | MountKind::SecretEnv { id, required } => {
                        add(&mut self.secrets, id, *required)
                    }
                    MountKind::Ssh { id, required, .. } => add(&mut self.ssh, id, *required),
                    MountKind::Cache { id, .. } => {
                        let id = if id.is_empty() { &m.target } else { id };
                        if !self.cache.contains(id) {
                            self.cache.push(id.clone());
                        }
                    }
                    MountKind::Bind { .. } | MountKind::Tmpfs { .. } => {}
                }
            }
        }
        self.secrets.sort_by(|a, b| a.id.cmp(&b.id));
        self.ssh.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// BuildKit's outline JSON, locations resolved in `text` (the build
    /// file). Without `sources`, which only the gateway sends.
    pub fn to_json(&self, text: &str) -> Value {
        let idx = LineIndex::new(text);
        let mut o = serde_json::Map::new();
        if let Some(n) = &self.name {
            o.insert("name".into(), json!(n));
        }
        if let Some(d) = self.description.as_ref().filter(|d| !d.is_empty()) {
            o.insert("description".into(), json!(d));
        }
        if !self.args.is_empty() {
            let args: Vec<Value> = self
                .args
                .iter()
                .map(|a| {
                    let mut m = serde_json::Map::new();
                    m.insert("name".into(), json!(a.name));
                    if let Some(d) = a.description.as_ref().filter(|d| !d.is_empty()) {
                        m.insert("description".into(), json!(d));
                    }
                    if let Some(v) = a.value.as_ref().filter(|v| !v.is_empty()) {
                        m.insert("value".into(), json!(v));
                    }
                    if let Some(s) = a.span {
                        m.insert("location".into(), location(&idx, text, s));
                    }
                    Value::Object(m)
                })
                .collect();
            o.insert("args".into(), json!(args));
        }
        let uses = |list: &[Use]| -> Value {
            json!(
                list.iter()
                    .map(|u| if u.required {
                        json!({"name": u.id, "required": true})
                    } else {
                        json!({"name": u.id})
                    })
                    .collect::<Vec<_>>()
            )
        };
        if !self.secrets.is_empty() {
            o.insert("secrets".into(), uses(&self.secrets));
        }
        if !self.ssh.is_empty() {
            o.insert("ssh".into(), uses(&self.ssh));
        }
        if !self.cache.is_empty() {
            o.insert(
                "cache".into(),
                json!(
                    self.cache
                        .iter()
                        .map(|c| json!({"ID": c}))
                        .collect::<Vec<_>>()
                ),
            );
        }
        Value::Object(o)
    }

    /// BuildKit's `PrintOutline`: the target, then a table each of build
    /// args, secrets and SSH agents.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if self.name.is_some() || self.description.is_some() {
            let mut rows = vec![vec![
                "TARGET:".to_string(),
                self.name.clone().unwrap_or_else(|| "(default)".into()),
            ]];
            if let Some(d) = &self.description {
                rows.push(vec!["DESCRIPTION:".into(), d.clone()]);
            }
            table(&mut out, &rows, 1);
            out.push('\n');
        }
        if !self.args.is_empty() {
            let mut rows = vec![vec![
                "BUILD ARG".to_string(),
                "VALUE".into(),
                "DESCRIPTION".into(),
            ]];
            for a in &self.args {
                rows.push(vec![
                    a.name.clone(),
                    a.value.clone().unwrap_or_default(),
                    a.description.clone().unwrap_or_default(),
                ]);
            }
            table(&mut out, &rows, 3);
            out.push('\n');
        }
        for (title, list) in [("SECRET", &self.secrets), ("SSH", &self.ssh)] {
            if list.is_empty() {
                continue;
            }
            let mut rows = vec![vec![title.to_string(), "REQUIRED".into()]];
            for u in list {
                let req = if u.required { "true" } else { "" };
                rows.push(vec![u.id.clone(), req.into()]);
            }
            table(&mut out, &rows, 3);
            out.push('\n');
        }
        out
    }
}

/// Rows in columns padded to the widest cell plus `gap` spaces, as Go's
/// `tabwriter` lays them out (the last column unpadded, no trailing
/// spaces).
fn table(out: &mut String, rows: &[Vec<String>], gap: usize) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}", w = width[c] + gap);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// BuildKit's `pb.Location` of `span`: 1-based lines, 0-based characters
/// (omitted when 0, as Go's protobuf JSON omits zero fields).
pub fn location(idx: &LineIndex, text: &str, span: Span) -> Value {
    let pos = |offset: u32| {
        let lc = idx.line_col(text, offset as usize);
        let mut p = serde_json::Map::new();
        p.insert("line".into(), json!(lc.line));
        if lc.col > 1 {
            p.insert("character".into(), json!(lc.col - 1));
        }
        Value::Object(p)
    };
    json!({"ranges": [{"start": pos(span.start), "end": pos(span.end)}]})
}

/// The comment lines (`prefix`, e.g. `//` or `#`) right above the line
/// `offset` is on, joined: a binding's or a build arg's description.
pub fn doc_comment(text: &str, offset: usize, prefix: &str) -> String {
    let offset = offset.min(text.len());
    let before = &text[..text[..offset].rfind('\n').map_or(0, |i| i + 1)];
    let mut lines: Vec<&str> = before
        .lines()
        .rev()
        .map(str::trim_start)
        .take_while(|l| l.starts_with(prefix) && !is_directive(l))
        .map(|l| {
            l.trim_start_matches(prefix.chars().next().unwrap_or('#'))
                .trim()
        })
        .collect();
    lines.reverse();
    lines.join(" ").trim().to_string()
}

/// A parser directive line, not a comment: `// syntax=`, `# syntax=`,
/// `# escape=`, `# check=`.
fn is_directive(line: &str) -> bool {
    ["// syntax=", "# syntax=", "# escape=", "# check="]
        .iter()
        .any(|d| line.to_ascii_lowercase().starts_with(d))
}

/// The outline of a Kilnfile: the selected target (its doc comment as the
/// description), every `arg("NAME")`/`arg("NAME", "DEFAULT")` in file order
/// with the comment above its line, and what the target's steps mount.
/// A Kilnfile that does not compile still lists its build args.
pub fn kilnfile(file_name: &str, text: &str, opts: &crate::Options) -> Outline {
    let (file, _) = crate::parse(text);
    let mut args = Vec::new();
    for item in &file.items {
        build_args(&item.value, &mut args);
    }
    let mut o = Outline {
        args: args
            .into_iter()
            .map(|(name, value, span)| {
                let d = doc_comment(text, span.start as usize, "//");
                Arg {
                    name,
                    value,
                    description: (!d.is_empty()).then_some(d),
                    span: Some(span),
                }
            })
            .collect(),
        ..Outline::default()
    };
    if let Ok(c) = crate::compile(file_name, text, opts) {
        if let Some(item) = file.items.iter().find(|i| i.name.name == c.target) {
            let doc = doc_comment(text, item.span.start as usize, "//");
            o.description = (!doc.is_empty()).then_some(doc);
        }
        o.name = Some(c.target);
        o.add_uses(&c.definition);
    }
    o
}

/// Every `arg("NAME")` / `arg("NAME", "DEFAULT")` in `e`, each name once.
fn build_args(e: &Expr, out: &mut Vec<(String, Option<String>, Span)>) {
    let str_of = |e: &Expr| match &e.kind {
        ExprKind::Str(s) => Some(s.clone()),
        _ => None,
    };
    match &e.kind {
        ExprKind::Call { func, args } => {
            if func.name == "arg"
                && let Some(name) = args.first().and_then(str_of)
                && !out.iter().any(|(n, _, _)| *n == name)
            {
                out.push((name, args.get(1).and_then(str_of), e.span));
            }
            args.iter().for_each(|a| build_args(a, out));
        }
        ExprKind::Macro { args, .. } => args.iter().for_each(|a| build_args(a, out)),
        ExprKind::Array(items) => items.iter().for_each(|a| build_args(a, out)),
        ExprKind::Chain { head, calls } => {
            build_args(head, out);
            for c in calls {
                c.args.iter().for_each(|a| build_args(a, out));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"// The Go version to build with.
let builder = image(format!("golang:{}", arg("GO_VERSION", "1.22")))
    .run("go build", [secret("netrc").required(true), ssh(), ssh("deploy").required(true), cache("/root/.cache")]);
// The app, on the static base.
let app = static_base().copy(builder.path("/out"), "/app");
"#;

    #[test]
    fn lists_args_secrets_and_ssh() {
        let o = kilnfile("Kilnfile", SRC, &crate::Options::default());
        assert_eq!(o.name.as_deref(), Some("app"));
        assert_eq!(
            o.description.as_deref(),
            Some("The app, on the static base.")
        );
        assert_eq!(o.args.len(), 1);
        assert_eq!(o.args[0].value.as_deref(), Some("1.22"));
        assert_eq!(
            o.args[0].description.as_deref(),
            Some("The Go version to build with.")
        );
        assert_eq!(
            o.ssh,
            vec![
                Use {
                    id: "default".into(),
                    required: false
                },
                Use {
                    id: "deploy".into(),
                    required: true
                }
            ]
        );
        assert_eq!(o.secrets.len(), 1);
        assert!(o.secrets[0].required);
        assert_eq!(o.cache, vec!["/root/.cache".to_string()]);
        let j = o.to_json(SRC);
        assert_eq!(j["ssh"][1], json!({"name": "deploy", "required": true}));
        assert_eq!(j["args"][0]["location"]["ranges"][0]["start"]["line"], 2);
        let t = o.to_text();
        assert!(t.contains("TARGET:      app\n"), "{t}");
        assert!(
            t.contains("SSH       REQUIRED\ndefault\ndeploy    true\n"),
            "{t}"
        );
        assert!(
            t.contains("GO_VERSION   1.22    The Go version to build with.\n"),
            "{t}"
        );
    }
}
