//! `RUN`: shell and exec forms, heredocs, `--mount`, `--network`.

use std::ops::Range;

use kiln_dag::{CacheSharing, Exec, ExecMount, Network, State};
use parse_dockerfile as pd;

use crate::lower::{Lowerer, StageCx};
use crate::text;

/// A `#!` heredoc run as a program: its name and content.
pub(crate) type Script = (String, String);

/// The options of a secret mount; an ssh mount's are these without the
/// last, `env`.
const SECRET_KEYS: &[&str] = &[
    "type",
    "target",
    "dst",
    "destination",
    "id",
    "required",
    "mode",
    "uid",
    "gid",
    "env",
];

/// Where BuildKit mounts a `#!` heredoc script to run it.
pub(crate) const PIPES: &str = "/dev/pipes";

impl Lowerer<'_> {
    pub(crate) fn run(&mut self, cx: &mut StageCx, r: &pd::RunInstruction<'_>) {
        let start = r.run.span.start;
        let vars = &cx.vars;
        let mut exec_mounts = Vec::new();
        let mut network = Network::Host;
        let mut ok = true;
        for flag in &r.options {
            let span = flag.span();
            let raw = flag.value.as_ref().map_or("", |v| &v.value);
            match &*flag.name.value {
                "mount" => match self.expand(raw, vars, &span) {
                    Some(spec) => match self.mount(cx, &spec, &span) {
                        Some(m) => exec_mounts.push(m),
                        None => ok = false,
                    },
                    None => ok = false,
                },
                "network" => match self.expand(raw, vars, &span).as_deref() {
                    Some("default") | Some("host") => network = Network::Host,
                    Some("none") => network = Network::None,
                    Some(other) => {
                        self.error(
                            "dockerfile::network",
                            &span,
                            format!("unknown network mode `{other}`"),
                            "use `--network=default`, `none` or `host`",
                        );
                        ok = false;
                    }
                    None => ok = false,
                },
                "security" => {
                    if raw != "sandbox" {
                        self.error(
                            "dockerfile::unsupported",
                            &span,
                            format!("`RUN --security={raw}` is not supported: a kiln step never holds host privileges"),
                            "do the privileged part outside the build, or drop the flag",
                        );
                        ok = false;
                    }
                }
                other => {
                    self.error(
                        "dockerfile::flag",
                        &span,
                        format!("`RUN --{other}` is not supported by kiln"),
                        "`RUN` takes `--mount`, `--network` and `--security=sandbox`",
                    );
                    ok = false;
                }
            }
        }
        let Some((argv, script)) = self.run_args(cx, r) else {
            return;
        };
        if !ok {
            return;
        }
        let mut exec = Exec::argv(argv).network(network);
        for (k, v) in cx.run_args() {
            exec = exec.env(k.clone(), v.clone());
        }
        for m in exec_mounts {
            exec = exec.mount(m);
        }
        if let Some((name, data)) = script {
            let file = State::scratch().mkfile(&format!("/{name}"), data.as_bytes(), 0o755, None);
            exec = exec.mount(ExecMount::Bind {
                target: PIPES.to_string(),
                from: file,
                selector: "/".to_string(),
                readonly: true,
            });
        }
        let end = r
            .here_docs
            .first()
            .map_or(instruction_end(&r.arguments), |h| h.span.start);
        let summary = self.summary(start, end);
        let meta = self.step_meta(cx, start, &summary);
        cx.state = cx.state.run(exec.settings(&self.opts.run)).into_meta(meta);
    }

    /// The argv, and a `#!` heredoc script to mount at [`PIPES`].
    fn run_args(
        &mut self,
        cx: &StageCx,
        r: &pd::RunInstruction<'_>,
    ) -> Option<(Vec<String>, Option<Script>)> {
        let shell_form = matches!(r.arguments, pd::Command::Shell(_));
        if shell_form && let Some(base) = cx.no_shell {
            self.error(
                "dockerfile::run-without-shell",
                &r.run.span,
                format!("`RUN` in a stage built on `{base}`: there is no `/bin/sh` to run it"),
                "run the command in a builder stage and `COPY --from=builder` its output into this one",
            );
            return None;
        }
        if matches!(r.arguments, pd::Command::Exec(_)) && !r.here_docs.is_empty() {
            self.error(
                "dockerfile::heredoc",
                &r.run.span,
                "a heredoc needs the shell form of `RUN`",
                "write `RUN <<EOF` followed by the script",
            );
            return None;
        }
        match run_argv(self.src, self.escape, &cx.shell, r) {
            Ok(v) => Some(v),
            Err(ArgvError::HeredocMismatch) => {
                self.error(
                    "dockerfile::heredoc",
                    &r.run.span,
                    "the heredoc markers of this `RUN` could not be matched with their bodies",
                    "put every `<<NAME` on the `RUN` line and end each body with `NAME` alone on a line",
                );
                None
            }
            Err(ArgvError::UnknownForm) => None,
        }
    }

    /// One `--mount=` spec (already expanded).
    fn mount(&mut self, cx: &StageCx, spec: &str, span: &Range<usize>) -> Option<ExecMount> {
        let fields = MountFields::parse(spec);
        let get = |names: &[&str]| fields.get(names);
        let flag = |names: &[&str], default: bool| -> Result<bool, String> {
            match get(names) {
                None => Ok(default),
                Some(v) => match v.as_str() {
                    "true" | "1" | "" => Ok(true),
                    "false" | "0" => Ok(false),
                    other => Err(format!("`{}={other}` is not true or false", names[0])),
                },
            }
        };
        let kind = get(&["type"]).unwrap_or_else(|| "bind".to_string());
        let known: &[&str] = match kind.as_str() {
            "bind" => &[
                "type",
                "target",
                "dst",
                "destination",
                "source",
                "src",
                "from",
                "ro",
                "readonly",
                "rw",
                "readwrite",
            ],
            "cache" => &[
                "type",
                "target",
                "dst",
                "destination",
                "id",
                "sharing",
                "ro",
                "readonly",
                "rw",
                "readwrite",
                "mode",
                "uid",
                "gid",
                "from",
                "source",
                "src",
            ],
            "tmpfs" => &["type", "target", "dst", "destination", "size"],
            "secret" => SECRET_KEYS,
            // a secret's options but `env`
            "ssh" => &SECRET_KEYS[..SECRET_KEYS.len() - 1],
            other => {
                self.error(
                    "dockerfile::mount",
                    span,
                    format!("unknown mount type `{other}`"),
                    "use `type=bind`, `cache`, `tmpfs`, `secret` or `ssh`",
                );
                return None;
            }
        };
        if let Some(k) = fields.keys().find(|k| !known.contains(k)) {
            self.error(
                "dockerfile::mount",
                span,
                format!("unknown option `{k}` for a `{kind}` mount"),
                format!("options of a `{kind}` mount: {}", known.join(", ")),
            );
            return None;
        }
        let target = get(&["target", "dst", "destination"])
            .map(|t| kiln_dag::resolve_path(cx.state.cwd(), &t));
        let bad = |lw: &mut Self, msg: String, help: &str| {
            lw.error("dockerfile::mount", span, msg, help.to_string());
            None
        };
        match kind.as_str() {
            "cache" => {
                let Some(target) = target else {
                    return bad(
                        self,
                        "a cache mount needs `target=`".into(),
                        "write `--mount=type=cache,target=/root/.cache`",
                    );
                };
                for k in ["from", "source", "src", "mode", "uid", "gid"] {
                    if get(&[k]).is_some() {
                        return bad(
                            self,
                            format!("`{k}=` on a cache mount is not supported by kiln yet"),
                            "drop it: kiln's cache mounts start empty and belong to root",
                        );
                    }
                }
                if flag(&["ro", "readonly"], false) == Ok(true) {
                    return bad(
                        self,
                        "a read-only cache mount is not supported by kiln yet".into(),
                        "drop `ro`",
                    );
                }
                let sharing = match get(&["sharing"]).as_deref() {
                    None | Some("shared") => CacheSharing::Shared,
                    Some("private") => CacheSharing::Private,
                    Some("locked") => CacheSharing::Locked,
                    Some(other) => {
                        return bad(
                            self,
                            format!("unknown cache sharing `{other}`"),
                            "use `sharing=shared`, `private` or `locked`",
                        );
                    }
                };
                let id = get(&["id"]).unwrap_or_else(|| target.clone());
                Some(ExecMount::Cache {
                    target,
                    id,
                    sharing,
                })
            }
            "tmpfs" => {
                let Some(target) = target else {
                    return bad(
                        self,
                        "a tmpfs mount needs `target=`".into(),
                        "write `--mount=type=tmpfs,target=/tmp`",
                    );
                };
                let size = match get(&["size"]) {
                    None => None,
                    Some(s) => match parse_size(&s) {
                        Some(n) => Some(n),
                        None => {
                            return bad(
                                self,
                                format!("invalid tmpfs size `{s}`"),
                                "write e.g. `size=64m` or a number of bytes",
                            );
                        }
                    },
                };
                Some(ExecMount::Tmpfs { target, size })
            }
            "secret" | "ssh" => {
                let env = get(&["env"]);
                let id = get(&["id"]).or_else(|| {
                    if kind == "ssh" {
                        // BuildKit's `default`, what `--ssh default` names
                        return Some("default".to_string());
                    }
                    target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').next())
                        .map(str::to_string)
                });
                let Some(id) = id.filter(|i| !i.is_empty()) else {
                    return bad(
                        self,
                        "a secret mount needs `id=` or `target=`".into(),
                        "write `--mount=type=secret,id=NAME`",
                    );
                };
                let required = match flag(&["required"], false) {
                    Ok(b) => b,
                    Err(m) => return bad(self, m, "write `required` or `required=true`"),
                };
                let num = |lw: &mut Self, k: &str, default: u32, radix: u32| -> Option<u32> {
                    match get(&[k]) {
                        None => Some(default),
                        Some(v) => match u32::from_str_radix(&v, radix) {
                            Ok(n) => Some(n),
                            Err(_) => {
                                lw.error(
                                    "dockerfile::mount",
                                    span,
                                    format!("invalid `{k}={v}`"),
                                    "write a number",
                                );
                                None
                            }
                        },
                    }
                };
                // BuildKit's defaults: a secret file 0400, an agent socket 0600
                let mode = num(self, "mode", if kind == "ssh" { 0o600 } else { 0o400 }, 8)?;
                let uid = num(self, "uid", 0, 10)?;
                let gid = num(self, "gid", 0, 10)?;
                if kind == "ssh" {
                    return Some(ExecMount::Ssh {
                        target,
                        id,
                        required,
                        mode,
                        uid,
                        gid,
                    });
                }
                if let Some(name) = env {
                    if target.is_some() {
                        return bad(
                            self,
                            "a secret mount with both `env=` and `target=` is not supported by kiln yet".into(),
                            "use two mounts of the same id, one with `env=` and one with `target=`",
                        );
                    }
                    return Some(ExecMount::SecretEnv { name, id, required });
                }
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                Some(ExecMount::Secret {
                    target,
                    id,
                    required,
                    mode,
                    uid,
                    gid,
                })
            }
            _ => {
                let Some(target) = target else {
                    return bad(
                        self,
                        "a bind mount needs `target=`".into(),
                        "write `--mount=type=bind,target=/src`",
                    );
                };
                let rw = match flag(&["rw", "readwrite"], false) {
                    Ok(b) => b,
                    Err(m) => return bad(self, m, "write `rw`"),
                };
                let source = get(&["source", "src"]).unwrap_or_default();
                let (from, selector) = match get(&["from"]) {
                    Some(f) => {
                        let st = self.stage_or_image(cx, &f, span)?;
                        (st, kiln_dag::resolve_path("/", &source))
                    }
                    None => {
                        let rel = kiln_dag::resolve_path("/", &source);
                        let rel = rel
                            .trim_start_matches('/')
                            .trim_end_matches('/')
                            .to_string();
                        let include = if rel.is_empty() {
                            Vec::new()
                        } else {
                            vec![rel.clone()]
                        };
                        (
                            State::context("context", include, Vec::new()),
                            format!("/{rel}"),
                        )
                    }
                };
                Some(ExecMount::Bind {
                    target,
                    from,
                    selector,
                    readonly: !rw,
                })
            }
        }
    }
}

/// Why [`run_argv`] has no argv.
pub(crate) enum ArgvError {
    /// The `<<NAME` markers on the `RUN` line do not pair with its bodies.
    HeredocMismatch,
    /// A command form the parser added that kiln does not know.
    UnknownForm,
}

/// The argv of a `RUN` as BuildKit builds it, and a `#!` heredoc script to
/// mount at [`PIPES`]: exec form as written; shell form through `shell`;
/// a lone heredoc as the shell's script (or, with `#!`, run as a program);
/// other heredocs reassembled for the shell to read. The lowering and
/// `kiln convert` both take it from here.
pub(crate) fn run_argv(
    src: &str,
    escape: char,
    shell: &[String],
    r: &pd::RunInstruction<'_>,
) -> Result<(Vec<String>, Option<Script>), ArgvError> {
    let with_shell = |last: String| {
        let mut argv = shell.to_vec();
        argv.push(last);
        argv
    };
    match &r.arguments {
        pd::Command::Exec(a) => Ok((a.value.iter().map(|s| s.value.to_string()).collect(), None)),
        pd::Command::Shell(s) if r.here_docs.is_empty() => {
            Ok((with_shell(text::join_continuations(s.value, escape)), None))
        }
        pd::Command::Shell(_) => {
            // The command line as written: after the flags, to the end of
            // the line that opens the heredocs.
            let from = r.options.last().map_or(r.run.span.end, |f| f.span().end);
            let line_end = src
                .get(from..)
                .unwrap_or("")
                .find('\n')
                .map_or(src.len(), |i| from + i);
            let line = src.get(from..line_end).unwrap_or("").trim();
            let markers = text::heredoc_markers(line);
            if markers.len() != r.here_docs.len() {
                return Err(ArgvError::HeredocMismatch);
            }
            let only_marker = markers.len() == 1
                && line
                    .trim_start_matches('<')
                    .trim_start_matches('-')
                    .trim_matches(['"', '\''])
                    == markers[0].name;
            if only_marker {
                let data = r.here_docs[0].value.to_string();
                let data = if markers[0].chomp {
                    text::chomp(&data)
                } else {
                    data
                };
                if data.starts_with("#!") {
                    let path = format!("{PIPES}/{}", markers[0].name);
                    return Ok((vec![path], Some((markers[0].name.clone(), data))));
                }
                return Ok((with_shell(data), None));
            }
            let mut full = line.to_string();
            for (i, m) in markers.iter().enumerate() {
                full.push('\n');
                full.push_str(&r.here_docs[i].value);
                full.push_str(&m.name);
            }
            Ok((with_shell(full), None))
        }
        _ => Err(ArgvError::UnknownForm),
    }
}

/// The end of the command's text, for step names.
fn instruction_end(c: &pd::Command<'_>) -> usize {
    match c {
        pd::Command::Exec(a) => a.span.end,
        pd::Command::Shell(s) => s.span.end,
        _ => 0,
    }
}

/// The fields of a `--mount=` spec: `key=value` or a bare `key` (which
/// reads as `true`), keys lowercased, the last of a name winning.
pub(crate) struct MountFields(Vec<(String, Option<String>)>);

impl MountFields {
    pub(crate) fn parse(spec: &str) -> MountFields {
        let fields = spec.split(',').map(str::trim).filter(|f| !f.is_empty());
        MountFields(
            fields
                .map(|f| match f.split_once('=') {
                    Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
                    None => (f.to_ascii_lowercase(), None),
                })
                .collect(),
        )
    }

    /// The value of the last field named one of `names`.
    pub(crate) fn get(&self, names: &[&str]) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.clone().unwrap_or_else(|| "true".to_string()))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

/// `64m`, `1g`, `4096`: bytes (binary units, as docker's RAMInBytes).
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    kiln_dag::settings::parse_size(s).ok()
}
