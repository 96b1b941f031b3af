//! Stages, `ARG` scoping and the configuration instructions; `RUN` is in
//! `run.rs`, `COPY`/`ADD` in `copy.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use kiln_dag::{Location, Meta};
use kiln_frontend::span::{LineIndex, Span};
use kiln_frontend::{Diagnostic, Options, Platform, State};
use parse_dockerfile as pd;
use pd::Instruction as I;

use crate::shell::{self, ExpandError, Vars};
use crate::{BaseImages, text};

/// What lowering produced.
pub(crate) struct Lowered {
    pub diags: Vec<Diagnostic>,
    pub targets: Vec<String>,
    pub selected: Option<(String, State)>,
    pub syntax: Option<String>,
}

/// A finished stage, for `FROM stage`, `COPY --from` and `--mount from=`.
pub(crate) struct Stage {
    /// Lowercased, as BuildKit compares stage names.
    pub name: Option<String>,
    pub state: State,
    pub no_shell: Option<&'static str>,
}

/// The stage being lowered.
pub(crate) struct StageCx {
    pub index: usize,
    pub name: Option<String>,
    pub label: String,
    /// Instructions in this stage, for `[label n/N]` step names.
    pub count: usize,
    pub step: usize,
    pub state: State,
    /// The base has no shell (`scratch`): `RUN` cannot work.
    pub no_shell: Option<&'static str>,
    /// The base image's and this stage's `ENV`, for expansion.
    pub env: Vars,
    /// `ARG`s declared in this stage, with their values when they have one.
    pub args: Vec<(String, Option<String>)>,
    /// What expanding instructions see: `ENV`s and valued `ARG`s, the
    /// later one of a name winning (as BuildKit orders them).
    pub vars: Vars,
    pub shell: Vec<String>,
}

impl StageCx {
    /// Build args a `RUN` gets in its environment: the valued ones whose
    /// name no `ENV` set (an `ENV` wins, as Docker documents).
    pub fn run_args(&self) -> impl Iterator<Item = (&String, &String)> {
        self.args
            .iter()
            .filter(|(k, _)| !self.env.contains_key(k))
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }
}

pub(crate) struct Lowerer<'a> {
    pub file: &'a str,
    pub src: &'a str,
    lines: LineIndex,
    pub escape: char,
    pub opts: &'a Options,
    bases: &'a dyn BaseImages,
    pub diags: Vec<Diagnostic>,
    /// Global `ARG`s (before the first `FROM`) and the automatic ones.
    global: Vars,
    /// Build args some `ARG` declared.
    consumed: BTreeSet<String>,
    pub stages: Vec<Stage>,
    pub target_platform: Platform,
    pub build_platform: Platform,
}

/// The automatic platform args, as BuildKit defines them.
fn platform_args(prefix: &str, p: &Platform) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}PLATFORM"), p.to_string()),
        (format!("{prefix}OS"), p.os.clone()),
        (format!("{prefix}ARCH"), p.architecture.clone()),
        (
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ),
    ]
}

const AUTO_ARGS: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Args BuildKit accepts without a declaration (proxies).
const BUILTIN_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SOURCE_DATE_EPOCH",
];

pub(crate) fn lower(file: &str, src: &str, opts: &Options, bases: &dyn BaseImages) -> Lowered {
    let mut lw = Lowerer {
        file,
        src,
        lines: LineIndex::new(src),
        escape: '\\',
        opts,
        bases,
        diags: Vec::new(),
        global: Vars::new(),
        consumed: BTreeSet::new(),
        stages: Vec::new(),
        target_platform: opts
            .platform
            .clone()
            .unwrap_or_else(Platform::host)
            .normalized(),
        build_platform: opts
            .build_platform
            .clone()
            .unwrap_or_else(Platform::host)
            .normalized(),
    };
    let parsed = match pd::parse(src) {
        Ok(d) => d,
        Err(e) => {
            lw.syntax_error(&e);
            return Lowered {
                diags: lw.diags,
                targets: Vec::new(),
                selected: None,
                syntax: None,
            };
        }
    };
    let syntax = parsed
        .parser_directives
        .syntax
        .as_ref()
        .map(|d| d.value.value.to_string());
    if let Some(e) = &parsed.parser_directives.escape {
        lw.escape = e.value.value;
    }
    lw.lower_all(&parsed);
    let targets: Vec<String> = lw
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| s.name.clone().unwrap_or_else(|| format!("stage-{i}")))
        .collect();
    let mut selected = None;
    if !lw.stages.is_empty() {
        match &opts.target {
            Some(t) => {
                let want = t.to_ascii_lowercase();
                match lw
                    .stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(&want))
                {
                    Some(i) => selected = Some((targets[i].clone(), lw.stages[i].state.clone())),
                    None => {
                        let named: Vec<&str> =
                            lw.stages.iter().filter_map(|s| s.name.as_deref()).collect();
                        let list = if named.is_empty() {
                            "none (name a stage with `FROM image AS name`)".to_string()
                        } else {
                            named.join(", ")
                        };
                        let help = match kiln_frontend::did_you_mean(&want, named.iter().copied()) {
                            Some(m) => {
                                format!("did you mean `{m}`? stages in this Dockerfile: {list}")
                            }
                            None => format!("stages in this Dockerfile: {list}"),
                        };
                        lw.diags.push(
                            Diagnostic::global(
                                "dockerfile::unknown-target",
                                format!("unknown target stage `{t}`"),
                            )
                            .help(help),
                        );
                    }
                }
            }
            None => {
                let i = lw.stages.len() - 1;
                selected = Some((targets[i].clone(), lw.stages[i].state.clone()));
            }
        }
    } else if !lw.diags.iter().any(Diagnostic::is_error) {
        lw.diags.push(
            Diagnostic::global("dockerfile::no-stage", "this Dockerfile has no `FROM`")
                .help("start a stage with `FROM image` (or `FROM scratch`)"),
        );
    }
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !lw.consumed.contains(*k) && !BUILTIN_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        let list: Vec<String> = unused.iter().map(|k| format!("`{k}`")).collect();
        lw.diags.push(
            Diagnostic::global(
                "dockerfile::unused-build-arg",
                format!("build arg {} not consumed by any `ARG`", list.join(", ")),
            )
            .help("declare it with `ARG NAME` in the stage that uses it, or drop the flag"),
        );
    }
    Lowered {
        diags: lw.diags,
        targets,
        selected,
        syntax,
    }
}

impl<'a> Lowerer<'a> {
    pub fn span(r: &Range<usize>) -> Span {
        Span::new(r.start, r.end)
    }

    pub fn location(&self, at: usize) -> Location {
        let lc = self.lines.line_col(self.src, at);
        Location {
            file: self.file.to_string(),
            line: u32::try_from(lc.line).unwrap_or(u32::MAX),
            column: u32::try_from(lc.col).unwrap_or(u32::MAX),
        }
    }

    pub fn error(
        &mut self,
        code: &'static str,
        span: &Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(code, Self::span(span), message).help(help));
    }

    pub fn warn(
        &mut self,
        code: &'static str,
        span: &Range<usize>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::warning(code, Self::span(span), message).help(help));
    }

    fn syntax_error(&mut self, e: &pd::Error) {
        // The parser reports a 1-based line and column.
        let mut at = 0;
        for (i, line) in self.src.split_inclusive('\n').enumerate() {
            if i + 1 == e.line() {
                let col = e.column().saturating_sub(1);
                at += line
                    .char_indices()
                    .nth(col)
                    .map_or(line.trim_end_matches('\n').len(), |(o, _)| o);
                break;
            }
            at += line.len();
        }
        let end = (at + 1).min(self.src.len()).max(at);
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        self.error(
            "dockerfile::syntax",
            &(at..end),
            message,
            "see https://docs.docker.com/reference/dockerfile/ for the instruction's form",
        );
    }

    /// Expands `word` with `vars`, reporting an error at `span`.
    pub fn expand(&mut self, word: &str, vars: &Vars, span: &Range<usize>) -> Option<String> {
        match shell::expand(word, vars, self.escape) {
            Ok(s) => Some(s),
            Err(e) => {
                self.expand_error(e, span);
                None
            }
        }
    }

    pub fn expand_error(&mut self, e: ExpandError, span: &Range<usize>) {
        let help = match &e {
            ExpandError::Quote(_) => "close the quote, or escape it with the escape character",
            ExpandError::Brace => "close the variable with `}`",
            ExpandError::Substitution(_) => {
                "write `${NAME}`, `${NAME:-default}` or `${NAME:+alternative}`"
            }
            ExpandError::Required { .. } => "set it with `--build-arg` or an `ARG`/`ENV` default",
        };
        self.error("dockerfile::expand", span, e.to_string(), help);
    }

    fn lower_all(&mut self, df: &pd::Dockerfile<'_>) {
        let auto: Vec<(String, String)> = platform_args("TARGET", &self.target_platform)
            .into_iter()
            .chain(platform_args("BUILD", &self.build_platform))
            .collect();
        self.global.extend(auto);
        let mut cx: Option<StageCx> = None;
        // Instruction counts per stage, for step labels.
        let mut counts = Vec::new();
        for ins in &df.instructions {
            match ins {
                I::From(_) => counts.push(0usize),
                _ => {
                    if let Some(c) = counts.last_mut() {
                        *c += 1;
                    }
                }
            }
        }
        for ins in &df.instructions {
            match ins {
                I::From(f) => {
                    if let Some(done) = cx.take() {
                        self.finish(done);
                    }
                    let count = counts.get(self.stages.len()).copied().unwrap_or(0);
                    cx = Some(self.from(f, count));
                }
                I::Arg(a) if cx.is_none() => self.global_arg(a),
                other => match cx.as_mut() {
                    Some(c) => {
                        c.step += 1;
                        self.instruction(c, other);
                    }
                    None => {
                        let span = keyword_span(other);
                        self.error(
                            "dockerfile::before-from",
                            &span,
                            "only `ARG` may come before the first `FROM`",
                            "start a stage with `FROM image` first",
                        );
                    }
                },
            }
        }
        if let Some(done) = cx.take() {
            self.finish(done);
        }
    }

    fn finish(&mut self, cx: StageCx) {
        self.stages.push(Stage {
            name: cx.name,
            state: cx.state,
            no_shell: cx.no_shell,
        });
    }

    /// A global `ARG`: visible to `FROM` lines, and to stages that
    /// redeclare it without a value.
    fn global_arg(&mut self, a: &pd::ArgInstruction<'_>) {
        let vars = self.global.clone();
        for (name, value) in self.arg_decls(a, &vars) {
            match value {
                Some(v) => {
                    self.global.insert(name, v);
                }
                None => {
                    if !AUTO_ARGS.contains(&name.as_str()) {
                        self.global.remove(&name);
                    }
                }
            }
        }
    }

    /// The names and values an `ARG` line declares, given `vars` for its
    /// defaults; a `--build-arg` overrides a default.
    fn arg_decls(
        &mut self,
        a: &pd::ArgInstruction<'_>,
        vars: &Vars,
    ) -> Vec<(String, Option<String>)> {
        let span = a.arguments.span.clone();
        let words = match shell::split_words(&a.arguments.value, self.escape) {
            Ok(w) => w,
            Err(e) => {
                self.expand_error(e, &span);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                self.error(
                    "dockerfile::arg-name",
                    &span,
                    format!("invalid build arg name `{name}`"),
                    "write `ARG NAME` or `ARG NAME=default`",
                );
                continue;
            }
            let value = if let Some(v) = self.opts.build_args.get(&name) {
                self.consumed.insert(name.clone());
                Some(v.clone())
            } else {
                match default {
                    Some(d) => self.expand(&d, vars, &span),
                    None => None,
                }
            };
            out.push((name, value));
        }
        out
    }

    fn from(&mut self, f: &pd::FromInstruction<'_>, count: usize) -> StageCx {
        let index = self.stages.len();
        let mut platform_flag = None;
        for flag in &f.options {
            match &*flag.name.value {
                "platform" => {
                    let raw = flag.value.as_ref().map_or("", |v| &v.value);
                    let span = flag.span();
                    let Some(text) = self.expand(raw, &self.global.clone(), &span) else {
                        continue;
                    };
                    match Platform::parse(&text) {
                        Ok(p) => platform_flag = Some(p.normalized()),
                        Err(e) => self.error(
                            "dockerfile::platform",
                            &span,
                            e.to_string(),
                            "write e.g. `--platform=linux/arm64` or `--platform=$BUILDPLATFORM`",
                        ),
                    }
                }
                other => {
                    let span = flag.span();
                    self.error(
                        "dockerfile::flag",
                        &span,
                        format!("unknown flag `--{other}` for `FROM`"),
                        "`FROM` takes only `--platform`",
                    );
                }
            }
        }
        let name = f.as_.as_ref().map(|(_, n)| n.value.to_ascii_lowercase());
        if let Some((_, n)) = &f.as_ {
            let valid = n
                .value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && n.value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if !valid {
                self.error(
                    "dockerfile::stage-name",
                    &n.span,
                    format!("invalid stage name `{}`", n.value),
                    "a stage name starts with a letter and holds letters, digits, `-`, `_` and `.`",
                );
            }
        }
        let image_span = f.image.span.clone();
        let image = self
            .expand(&f.image.value, &self.global.clone(), &image_span)
            .unwrap_or_default();
        let label = name.clone().unwrap_or_else(|| format!("stage-{index}"));
        let mut cx = StageCx {
            index,
            name: name.clone(),
            label: label.clone(),
            count: count + 1,
            step: 1,
            state: State::scratch(),
            no_shell: None,
            env: Vars::new(),
            args: Vec::new(),
            vars: Vars::new(),
            shell: vec!["/bin/sh".into(), "-c".into()],
        };
        let lower = image.to_ascii_lowercase();
        let meta = |lw: &Self, what: String| Meta {
            name: Some(format!("[{label} 1/{}] FROM {what}", count + 1)),
            location: Some(lw.location(f.from.span.start)),
        };
        if let Some(prev) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            // A stage: its filesystem and configuration go on.
            cx.state = self.stages[prev].state.clone();
            cx.env = config_env(&cx.state);
            cx.vars = cx.env.clone();
            cx.no_shell = self.stages[prev].no_shell;
        } else if lower == "scratch" {
            cx.state = State::scratch().with_meta(meta(self, "scratch".into()));
            cx.no_shell = Some("scratch");
            // BuildKit makes sure every stage's image has a PATH.
            cx.env.insert("PATH".into(), kiln_dag::DEFAULT_PATH.into());
            cx.vars.insert("PATH".into(), kiln_dag::DEFAULT_PATH.into());
            // BuildKit's empty image works in `/`
            cx.state = cx.state.env("PATH", kiln_dag::DEFAULT_PATH).workdir("/");
        } else if image.is_empty() {
            self.error(
                "dockerfile::from",
                &image_span,
                "`FROM` names no image",
                "write `FROM image[:tag]`, or set the build arg it expands",
            );
        } else {
            match kiln_types::Reference::parse(&image) {
                Ok(r) => {
                    let reference = r.normalized().to_string();
                    let platform = platform_flag.clone().or_else(|| self.opts.platform.clone());
                    let lookup = platform
                        .clone()
                        .unwrap_or_else(|| self.target_platform.clone());
                    cx.state = State::image(reference.clone(), platform);
                    match self.bases.config(&reference, &lookup) {
                        Ok(Some(base)) => {
                            for kv in &base.env {
                                if let Some((k, v)) = kv.split_once('=') {
                                    cx.env.insert(k.to_string(), v.to_string());
                                    cx.vars.insert(k.to_string(), v.to_string());
                                }
                            }
                            if !base.onbuild.is_empty() {
                                self.error(
                                    "dockerfile::unsupported",
                                    &image_span,
                                    format!(
                                        "`{reference}` has `ONBUILD` triggers ({}), which kiln does not run yet",
                                        base.onbuild.join("; ")
                                    ),
                                    "write the triggers' instructions into this stage, after its `FROM`, and build on the image's own base",
                                );
                            }
                            if let Some(w) = base.workdir.filter(|w| !w.is_empty()) {
                                cx.state = cx.state.workdir(&w);
                            }
                            // BuildKit makes sure every stage's image has a PATH.
                            if !cx.env.contains_key("PATH") {
                                cx.env.insert("PATH".into(), kiln_dag::DEFAULT_PATH.into());
                                cx.vars.insert("PATH".into(), kiln_dag::DEFAULT_PATH.into());
                                cx.state = cx.state.env("PATH", kiln_dag::DEFAULT_PATH);
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => self.error(
                            "dockerfile::base-image",
                            &image_span,
                            format!("cannot read the config of `{reference}`: {reason}"),
                            "check the name and the registry (`kiln pull` shows the full error), or pass `--pull=never` for a local image",
                        ),
                    }
                    cx.state = cx.state.with_meta(meta(self, reference));
                }
                Err(e) => {
                    // Point into the image text when it was written as is.
                    let span = if f.image.value == image {
                        image_span.start + e.span.start..image_span.start + e.span.end
                    } else {
                        image_span.clone()
                    };
                    self.error(
                        "dockerfile::bad-reference",
                        &span,
                        format!("invalid image reference `{image}`: {}", e.kind),
                        e.kind
                            .fix()
                            .unwrap_or_else(|| format!("expected {}", e.kind.expected())),
                    );
                }
            }
        }
        cx
    }

    /// The step name and location of the instruction at `at`.
    pub fn step_meta(&self, cx: &StageCx, at: usize, summary: &str) -> Meta {
        let summary: String = summary.split_whitespace().collect::<Vec<_>>().join(" ");
        let summary = if summary.chars().count() > 80 {
            let s: String = summary.chars().take(77).collect();
            format!("{s}...")
        } else {
            summary
        };
        Meta {
            name: Some(format!("[{} {}/{}] {summary}", cx.label, cx.step, cx.count)),
            location: Some(self.location(at)),
        }
    }

    /// The instruction's text from its keyword to its end, for step names.
    pub fn summary(&self, start: usize, end: usize) -> String {
        let s = self.src.get(start..end).unwrap_or("");
        text::join_continuations(s, self.escape)
    }

    fn instruction(&mut self, cx: &mut StageCx, ins: &I<'_>) {
        match ins {
            I::Arg(a) => {
                for (name, value) in self.arg_decls(a, &cx.vars) {
                    // Declared without a value: the global's or the
                    // automatic one, when there is one.
                    let value = value.or_else(|| self.global.get(&name).cloned());
                    if let Some(v) = &value {
                        cx.vars.insert(name.clone(), v.clone());
                    }
                    cx.args.retain(|(n, _)| *n != name);
                    cx.args.push((name, value));
                }
            }
            I::Env(e) => {
                let span = e.arguments.span.clone();
                for (k, v) in self.pairs(&e.arguments.value, &mut cx.vars, &span, "ENV") {
                    cx.env.insert(k.clone(), v.clone());
                    cx.vars.insert(k.clone(), v.clone());
                    cx.state = cx.state.env(k, v);
                }
            }
            I::Label(l) => {
                let span = l.arguments.span.clone();
                for (k, v) in self.pairs(&l.arguments.value, &mut cx.vars, &span, "LABEL") {
                    cx.state = cx.state.label(k, v);
                }
            }
            I::Maintainer(m) => {
                self.warn(
                    "dockerfile::maintainer",
                    &m.maintainer.span,
                    "`MAINTAINER` is deprecated and kiln records it as the `maintainer` label",
                    "write `LABEL org.opencontainers.image.authors=\"...\"`",
                );
                cx.state = cx.state.label("maintainer", m.name.value.to_string());
            }
            I::Workdir(w) => {
                let span = w.arguments.span.clone();
                let Some(path) = self.expand(&w.arguments.value, &cx.vars, &span) else {
                    return;
                };
                if path.is_empty() {
                    self.error(
                        "dockerfile::workdir",
                        &span,
                        "`WORKDIR` needs a path",
                        "write e.g. `WORKDIR /app`",
                    );
                    return;
                }
                cx.state = cx.state.workdir(&path);
                // BuildKit creates the directory, as the current user.
                let cwd = cx.state.cwd().to_string();
                if cwd != "/" {
                    let meta = self.step_meta(cx, w.workdir.span.start, &format!("WORKDIR {path}"));
                    let owner = cx.state.config().user.clone().map(|u| {
                        let (user, group) = match u.split_once(':') {
                            Some((u, g)) => (u.to_string(), Some(g.to_string())),
                            None => (u, None),
                        };
                        kiln_dag::Chown { user, group }
                    });
                    cx.state = cx.state.mkdir(&cwd, 0o755, true, owner).into_meta(meta);
                }
            }
            I::User(u) => {
                let span = u.arguments.span.clone();
                if let Some(user) = self.expand(&u.arguments.value, &cx.vars, &span) {
                    cx.state = cx.state.user(user);
                }
            }
            I::Expose(e) => {
                let vars = &cx.vars;
                for p in &e.arguments {
                    if let Some(port) = self.expand(&p.value, vars, &p.span) {
                        for port in port.split_whitespace() {
                            if !valid_port(port) {
                                self.error(
                                    "dockerfile::expose",
                                    &p.span,
                                    format!("invalid port `{port}`"),
                                    "write `PORT`, `PORT/tcp`, `PORT/udp` or a range `FROM-TO`",
                                );
                                continue;
                            }
                            // BuildKit lists every port of a range
                            let (num, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                            match num.split_once('-') {
                                Some((a, b)) => {
                                    let (a, b): (u16, u16) =
                                        (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
                                    for p in a..=b {
                                        cx.state = cx.state.expose(&format!("{p}/{proto}"));
                                    }
                                }
                                None => cx.state = cx.state.expose(&format!("{num}/{proto}")),
                            }
                        }
                    }
                }
            }
            I::Volume(v) => {
                let vars = &cx.vars;
                let items: Vec<&pd::UnescapedString<'_>> = match &v.arguments {
                    pd::JsonOrStringArray::Json(a) => a.value.iter().collect(),
                    pd::JsonOrStringArray::String(a) => a.iter().collect(),
                };
                for item in items {
                    if let Some(path) = self.expand(&item.value, vars, &item.span) {
                        if path.is_empty() {
                            self.error(
                                "dockerfile::volume",
                                &item.span,
                                "`VOLUME` names an empty path",
                                "write e.g. `VOLUME /data`",
                            );
                            continue;
                        }
                        cx.state = cx.state.volume(path);
                    }
                }
            }
            I::Stopsignal(s) => {
                let span = s.arguments.span.clone();
                if let Some(sig) = self.expand(&s.arguments.value, &cx.vars, &span) {
                    cx.state = cx.state.stop_signal(sig);
                }
            }
            I::Shell(s) => {
                cx.shell = s.arguments.iter().map(|a| a.value.to_string()).collect();
            }
            I::Cmd(c) => {
                let argv = self.command(cx, &c.arguments);
                let at = self.location(c.cmd.span.start);
                cx.state = cx.state.cmd(argv).command_at(true, at);
            }
            I::Entrypoint(e) => {
                let argv = self.command(cx, &e.arguments);
                let at = self.location(e.entrypoint.span.start);
                cx.state = cx.state.entrypoint(argv).command_at(false, at);
            }
            I::Run(r) => self.run(cx, r),
            I::Copy(c) => self.copy(cx, c),
            I::Add(a) => self.add(cx, a),
            I::Healthcheck(h) => self.healthcheck(cx, h),
            I::Onbuild(o) => {
                // The trigger as written after `ONBUILD`, continuations joined.
                let start = o.onbuild.span.end;
                let end = keyword_end(self.src, start, self.escape);
                let trigger = self.summary(start, end).trim().to_string();
                cx.state = cx.state.onbuild(trigger);
            }
            I::From(_) => {}
            _ => {
                let span = keyword_span(ins);
                self.error(
                    "dockerfile::unsupported",
                    &span,
                    "this instruction is not supported by kiln",
                    "see docs/dockerfile.md for what is supported",
                );
            }
        }
    }

    /// `HEALTHCHECK [--interval=D ...] CMD ...` or `HEALTHCHECK NONE`.
    fn healthcheck(&mut self, cx: &mut StageCx, h: &pd::HealthcheckInstruction<'_>) {
        let mut hc = kiln_dag::Healthcheck::default();
        for flag in &h.options {
            let span = flag.span();
            let value = flag.value.as_ref().map_or("", |v| &v.value);
            let name = &*flag.name.value;
            let duration = |lw: &mut Self| match kiln_frontend::parse_duration(value) {
                Some(n) if n == 0 || n >= 1_000_000 => Some(n),
                Some(_) => {
                    lw.error(
                        "dockerfile::healthcheck",
                        &span,
                        format!("`--{name}={value}` is less than 1ms"),
                        "write at least `1ms`, or `0s` for the default",
                    );
                    None
                }
                None => {
                    lw.error(
                        "dockerfile::healthcheck",
                        &span,
                        format!("invalid duration `--{name}={value}`"),
                        "write a duration such as `30s`, `1m30s` or `500ms`",
                    );
                    None
                }
            };
            match name {
                "interval" => hc.interval = duration(self),
                "timeout" => hc.timeout = duration(self),
                "start-period" => hc.start_period = duration(self),
                "start-interval" => hc.start_interval = duration(self),
                "retries" => match value.parse::<u32>() {
                    Ok(n) => hc.retries = Some(n),
                    Err(_) => self.error(
                        "dockerfile::healthcheck",
                        &span,
                        format!("invalid `--retries={value}`"),
                        "write a whole number of retries",
                    ),
                },
                other => self.error(
                    "dockerfile::flag",
                    &span,
                    format!("unknown flag `--{other}` for `HEALTHCHECK`"),
                    "`HEALTHCHECK` takes `--interval`, `--timeout`, `--start-period`, `--start-interval` and `--retries`",
                ),
            }
        }
        hc.test = match &h.arguments {
            pd::HealthcheckArguments::Cmd { arguments, .. } => match arguments {
                pd::Command::Exec(a) => std::iter::once("CMD".to_string())
                    .chain(a.value.iter().map(|s| s.value.to_string()))
                    .collect(),
                pd::Command::Shell(s) => vec![
                    "CMD-SHELL".to_string(),
                    text::join_continuations(s.value, self.escape),
                ],
                _ => Vec::new(),
            },
            _ => vec!["NONE".to_string()],
        };
        cx.state = cx.state.healthcheck(hc);
    }

    /// `CMD`/`ENTRYPOINT` arguments: exec form as written, shell form through
    /// the stage's `SHELL`.
    pub fn command(&self, cx: &StageCx, c: &pd::Command<'_>) -> Vec<String> {
        match c {
            pd::Command::Exec(a) => a.value.iter().map(|s| s.value.to_string()).collect(),
            pd::Command::Shell(s) => {
                let mut argv = cx.shell.clone();
                argv.push(text::join_continuations(s.value, self.escape));
                argv
            }
            _ => Vec::new(),
        }
    }

    /// `KEY=VALUE ...` (or the old `KEY VALUE` form) of `ENV`/`LABEL`.
    /// `ENV` pairs are added to `vars` as they go (each sees the ones before
    /// it on the same line); `LABEL` leaves `vars` as it is.
    fn pairs(
        &mut self,
        raw: &str,
        vars: &mut Vars,
        span: &Range<usize>,
        what: &str,
    ) -> Vec<(String, String)> {
        let words = match shell::split_words(raw, self.escape) {
            Ok(w) => w,
            Err(e) => {
                self.expand_error(e, span);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        if words.first().is_some_and(|w| !w.contains('=')) {
            // `ENV KEY value with spaces`: one pair, the rest of the line.
            let key = words[0].clone();
            let rest = raw.trim_start()[key.len()..].trim();
            if rest.is_empty() {
                self.error(
                    "dockerfile::key-value",
                    span,
                    format!("`{what} {key}` has no value"),
                    format!("write `{what} {key}=VALUE`"),
                );
                return out;
            }
            if let Some(v) = self.expand(rest, vars, span) {
                out.push((key, v));
            }
            return out;
        }
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                self.error(
                    "dockerfile::key-value",
                    span,
                    format!("`{w}` is not `KEY=VALUE`"),
                    format!("write `{what} KEY=VALUE [KEY=VALUE...]`, quoting values with spaces"),
                );
                continue;
            };
            let (Some(k), Some(v)) = (self.expand(k, vars, span), self.expand(v, vars, span))
            else {
                continue;
            };
            if k.is_empty() {
                self.error(
                    "dockerfile::key-value",
                    span,
                    "empty key",
                    format!("write `{what} KEY=VALUE`"),
                );
                continue;
            }
            if what == "ENV" {
                vars.insert(k.clone(), v.clone());
            }
            out.push((k, v));
        }
        out
    }

    /// A stage by name or index, for `--from` and `from=`.
    pub fn stage_ref(&self, name: &str, current: usize) -> Option<State> {
        let lower = name.to_ascii_lowercase();
        if let Some(s) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(&lower))
        {
            return Some(s.state.clone());
        }
        let i: usize = name.parse().ok()?;
        (i < current).then(|| self.stages.get(i).map(|s| s.state.clone()))?
    }

    /// The state `--from=X`/`from=X` names: a stage, else an image.
    pub fn stage_or_image(
        &mut self,
        cx: &StageCx,
        name: &str,
        span: &Range<usize>,
    ) -> Option<State> {
        if let Some(s) = self.stage_ref(name, cx.index) {
            return Some(s);
        }
        if cx.label == name.to_ascii_lowercase() {
            self.error(
                "dockerfile::self-reference",
                span,
                format!("stage `{name}` refers to itself"),
                "copy from an earlier stage",
            );
            return None;
        }
        if name.parse::<usize>().is_ok() {
            self.error(
                "dockerfile::stage-index",
                span,
                format!("no earlier stage with index {name}"),
                "stages are numbered from 0 in file order; name one with `FROM image AS name`",
            );
            return None;
        }
        match kiln_types::Reference::parse(name) {
            Ok(r) => {
                let platform = self.opts.platform.clone();
                Some(State::image(r.normalized().to_string(), platform))
            }
            Err(e) => {
                let names: Vec<&str> = self
                    .stages
                    .iter()
                    .filter_map(|s| s.name.as_deref())
                    .collect();
                let help = match kiln_frontend::did_you_mean(name, names.iter().copied()) {
                    Some(m) => format!("did you mean the stage `{m}`?"),
                    None => "name an earlier stage (`FROM image AS name`) or an image".to_string(),
                };
                self.error(
                    "dockerfile::from-ref",
                    span,
                    format!(
                        "`{name}` is neither an earlier stage nor an image reference: {}",
                        e.kind
                    ),
                    help,
                );
                None
            }
        }
    }
}

fn config_env(s: &State) -> Vars {
    s.config()
        .env
        .iter()
        .cloned()
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

/// The end of the instruction whose text starts at `start`: the end of its
/// last line, following line continuations.
fn keyword_end(src: &str, start: usize, escape: char) -> usize {
    let mut at = start;
    while let Some(rest) = src.get(at..) {
        let Some(nl) = rest.find('\n') else {
            return src.len();
        };
        let line = rest[..nl].trim_end_matches([' ', '\t', '\r']);
        at += nl + 1;
        if !line.ends_with(escape) {
            return at - 1;
        }
    }
    src.len()
}

fn valid_port(p: &str) -> bool {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let ok_num = |n: &str| n.parse::<u16>().is_ok();
    let nums = match num.split_once('-') {
        Some((a, b)) => ok_num(a) && ok_num(b),
        None => ok_num(num),
    };
    nums && ["tcp", "udp", "sctp"].contains(&proto.to_ascii_lowercase().as_str())
}

pub(crate) fn keyword_span(ins: &I<'_>) -> Range<usize> {
    match ins {
        I::Add(i) => i.add.span.clone(),
        I::Arg(i) => i.arg.span.clone(),
        I::Cmd(i) => i.cmd.span.clone(),
        I::Copy(i) => i.copy.span.clone(),
        I::Entrypoint(i) => i.entrypoint.span.clone(),
        I::Env(i) => i.env.span.clone(),
        I::Expose(i) => i.expose.span.clone(),
        I::From(i) => i.from.span.clone(),
        I::Healthcheck(i) => i.healthcheck.span.clone(),
        I::Label(i) => i.label.span.clone(),
        I::Maintainer(i) => i.maintainer.span.clone(),
        I::Onbuild(i) => i.onbuild.span.clone(),
        I::Run(i) => i.run.span.clone(),
        I::Shell(i) => i.shell.span.clone(),
        I::Stopsignal(i) => i.stopsignal.span.clone(),
        I::User(i) => i.user.span.clone(),
        I::Volume(i) => i.volume.span.clone(),
        I::Workdir(i) => i.workdir.span.clone(),
        _ => 0..0,
    }
}
