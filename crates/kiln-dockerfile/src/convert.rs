//! `kiln convert`: a Dockerfile written out as an idiomatic Kilnfile that
//! lowers to the same graph (same root digest, same image config).
//!
//! One `let` per stage, named after it; build args as `arg(..)` bindings
//! (with `format!` where an instruction expands them); comments carried
//! over; `context().path(..)` and `stage.path(..)` copies; run options for
//! mounts, network and the step-only env a `RUN` gets from its stage's
//! `ARG`s. What BuildKit adds on its own is written out, so the graph stays
//! the same: the `PATH` of a `scratch` stage, the directory `WORKDIR`
//! creates. What the Kilnfile cannot say is a located error.
//!
//! The walk mirrors `lower.rs`, which has checked the file first, so every
//! instruction here is known to be valid.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use kiln_frontend::span::Span;
use kiln_frontend::{Diagnostic, Diagnostics, Options, Platform};
use parse_dockerfile as pd;
use pd::Instruction as I;

use crate::shell::{self, Vars};
use crate::{BaseImages, lower, text};

/// A converted Dockerfile.
#[derive(Debug)]
pub struct Converted {
    /// The Kilnfile's text.
    pub text: String,
    /// The Dockerfile's own warnings (e.g. `MAINTAINER`).
    pub warnings: Diagnostics,
}

/// Converts the Dockerfile `src`. `opts` and `bases` are what a build of
/// it would use: build args given become the `arg(..)` values, and the base
/// images' working directory and `PATH` (which BuildKit's graph depends on)
/// are written out.
pub fn convert(
    file_name: &str,
    src: &str,
    opts: &Options,
    bases: &dyn BaseImages,
) -> Result<Converted, Diagnostics> {
    // The parser's offsets count from after a byte order mark.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    // Any target: the conversion covers every stage.
    let check_opts = Options {
        target: None,
        ..opts.clone()
    };
    let checked = lower::lower(file_name, src, &check_opts, bases);
    let source: Arc<str> = Arc::from(src);
    if checked.diags.iter().any(Diagnostic::is_error) {
        return Err(Diagnostics::new(file_name, source, checked.diags));
    }
    let parsed = match pd::parse(src) {
        Ok(p) => p,
        Err(_) => return Err(Diagnostics::new(file_name, source, checked.diags)),
    };
    let mut cv = Converter::new(src, opts, bases);
    if let Some(e) = &parsed.parser_directives.escape {
        cv.escape = e.value.value;
    }
    cv.comments = comments(src, &parsed, cv.escape);
    cv.run(&parsed);
    if cv.errors.is_empty() {
        Ok(Converted {
            text: cv.text(file_name),
            warnings: Diagnostics::new(file_name, source, checked.diags),
        })
    } else {
        Err(Diagnostics::new(file_name, source, cv.errors))
    }
}

/// A string-valued Kilnfile expression.
#[derive(Debug, Clone)]
enum Expr {
    Lit(String),
    /// `format!` pieces around references to arg bindings.
    Format(Vec<String>, Vec<usize>),
    Arg(usize),
}

struct ArgDef {
    name: String,
    binding: String,
    default: Option<Expr>,
    used: bool,
}

enum Item {
    Text(String),
    Arg(usize),
}

struct Stage {
    /// Lowercased `AS` name.
    name: Option<String>,
    binding: String,
    env: Vec<(String, String)>,
    cwd: String,
    user: Option<String>,
}

struct Cx {
    binding: String,
    name: Option<String>,
    /// The chain so far, one `.step(..)` per line.
    chain: Vec<String>,
    /// The base image's and the stage's env.
    vars: Vars,
    /// What expanding instructions see: env and valued args, the later
    /// one of a name winning (as `lower.rs` orders them).
    view: Vars,
    /// The names in `view` whose value is an arg binding's.
    refs: HashMap<String, usize>,
    /// The stage's own config env (what a later `FROM stage` sees).
    env: Vec<(String, String)>,
    args: Vec<(String, Option<String>, Option<Expr>)>,
    shell: Vec<String>,
    cwd: String,
    user: Option<String>,
    scripts: usize,
}

impl Cx {
    fn vars(&self) -> Vars {
        self.view.clone()
    }

    /// Args an expansion may refer to by binding.
    fn arg_refs(&self) -> Vec<(String, usize)> {
        self.refs.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// An env variable of the base or an `ENV`.
    fn set_env(&mut self, k: &str, v: &str) {
        self.vars.insert(k.to_string(), v.to_string());
        self.view.insert(k.to_string(), v.to_string());
        self.refs.remove(k);
    }

    fn push(&mut self, step: String) {
        self.chain.push(format!("    .{step}"));
    }
}

struct Converter<'a> {
    src: &'a str,
    opts: &'a Options,
    bases: &'a dyn BaseImages,
    escape: char,
    errors: Vec<Diagnostic>,
    items: Vec<Item>,
    args: Vec<ArgDef>,
    names: HashSet<String>,
    stages: Vec<Stage>,
    /// Global args: value and, for declared ones, their binding.
    global: Vars,
    global_refs: HashMap<String, usize>,
    comments: Vec<(usize, String)>,
    next_comment: usize,
    target_platform: Platform,
    build_platform: Platform,
}

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Names a Kilnfile binding cannot take (Rust keywords the parser knows).
const RESERVED: &[&str] = &[
    "let", "true", "false", "fn", "mut", "if", "else", "match", "loop", "while", "for", "in",
    "return", "self", "Self", "struct", "enum", "impl", "mod", "use", "pub", "type", "const",
    "static", "as", "ref", "move", "crate", "super", "where", "async", "await", "dyn",
];

impl<'a> Converter<'a> {
    fn new(src: &'a str, opts: &'a Options, bases: &'a dyn BaseImages) -> Self {
        Converter {
            src,
            opts,
            bases,
            escape: '\\',
            errors: Vec::new(),
            items: Vec::new(),
            args: Vec::new(),
            names: HashSet::new(),
            stages: Vec::new(),
            global: Vars::new(),
            global_refs: HashMap::new(),
            comments: Vec::new(),
            next_comment: 0,
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
        }
    }

    fn error(&mut self, span: &Range<usize>, message: impl Into<String>, help: impl Into<String>) {
        self.errors.push(
            Diagnostic::error(
                "dockerfile::convert",
                Span::new(span.start, span.end),
                message,
            )
            .help(help),
        );
    }

    /// A fresh binding name from `want`.
    fn bind(&mut self, want: &str, suffix: &str) -> String {
        let mut base: String = want
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if base.is_empty() || base.starts_with(|c: char| c.is_ascii_digit()) {
            base.insert(0, '_');
        }
        if RESERVED.contains(&base.as_str()) {
            base.push('_');
            base.push_str(suffix);
        }
        let mut name = base.clone();
        if self.names.contains(&name) {
            name = format!("{base}_{suffix}");
        }
        let mut n = 2;
        while self.names.contains(&name) {
            name = format!("{base}_{suffix}{n}");
            n += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Comments that come before `at`, as Kilnfile lines with `indent`.
    fn comments_before(&mut self, at: usize, indent: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((off, text)) = self.comments.get(self.next_comment) {
            if *off >= at {
                break;
            }
            out.push(if text.is_empty() {
                format!("{indent}//")
            } else {
                format!("{indent}// {text}")
            });
            self.next_comment += 1;
        }
        out
    }

    fn run(&mut self, df: &pd::Dockerfile<'_>) {
        for (k, v) in platform_args("TARGET", &self.target_platform)
            .into_iter()
            .chain(platform_args("BUILD", &self.build_platform))
        {
            self.global.insert(k, v);
        }
        // Stage names first: they keep their names, args give way.
        for ins in &df.instructions {
            if let I::From(f) = ins
                && let Some((_, n)) = &f.as_
            {
                let name = n.value.to_ascii_lowercase();
                let b = self.bind(&name, "stage");
                self.names.remove(&b);
            }
        }
        let mut cx: Option<Cx> = None;
        for ins in &df.instructions {
            let at = lower::keyword_span(ins).start;
            match ins {
                I::From(f) => {
                    if let Some(done) = cx.take() {
                        self.finish(done);
                    }
                    let lines = self.comments_before(at, "");
                    self.items.extend(lines.into_iter().map(Item::Text));
                    cx = Some(self.from(f));
                }
                I::Arg(a) if cx.is_none() => {
                    let lines = self.comments_before(at, "");
                    self.items.extend(lines.into_iter().map(Item::Text));
                    self.global_arg(a);
                }
                other => {
                    if let Some(c) = cx.as_mut() {
                        let lines = self.comments_before(at, "    ");
                        c.chain.extend(lines);
                        self.instruction(c, other);
                    }
                }
            }
        }
        if let Some(done) = cx.take() {
            self.finish(done);
        }
        let rest = self.comments_before(usize::MAX, "");
        self.items.extend(rest.into_iter().map(Item::Text));
    }

    fn finish(&mut self, cx: Cx) {
        let mut text = format!("let {} = ", cx.binding);
        let mut lines = cx.chain.into_iter();
        if let Some(head) = lines.next() {
            text.push_str(&head);
        }
        // Comments at the end of the chain would hide the `;`.
        let mut trailing = Vec::new();
        for l in lines {
            if l.trim_start().starts_with("//") {
                trailing.push(l);
            } else {
                text.extend(trailing.drain(..).map(|t| format!("\n{t}")));
                text.push('\n');
                text.push_str(&l);
            }
        }
        text.push(';');
        self.items.push(Item::Text(text));
        for t in trailing {
            self.items.push(Item::Text(t.trim_start().to_string()));
        }
        self.stages.push(Stage {
            name: cx.name,
            binding: cx.binding,
            env: cx.env,
            cwd: cx.cwd,
            user: cx.user,
        });
    }

    /// Declares an arg binding (emitted where it is declared).
    fn new_arg(&mut self, name: &str, default: Option<Expr>) -> usize {
        let binding = self.bind(name, "arg");
        self.args.push(ArgDef {
            name: name.to_string(),
            binding,
            default,
            used: false,
        });
        let id = self.args.len() - 1;
        self.items.push(Item::Arg(id));
        id
    }

    fn global_arg(&mut self, a: &pd::ArgInstruction<'_>) {
        let Ok(words) = shell::split_words(&a.arguments.value, self.escape) else {
            return;
        };
        let refs: Vec<(String, usize)> = self
            .global_refs
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            let default_expr = default
                .as_deref()
                .map(|d| self.template(d, &self.global.clone(), &refs));
            let value = match (self.opts.build_args.get(&name), &default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => shell::expand(d, &self.global, self.escape).ok(),
                (None, None) => None,
            };
            match value {
                Some(v) => {
                    let id = self.new_arg(&name, default_expr);
                    self.global.insert(name.clone(), v);
                    self.global_refs.insert(name, id);
                }
                None => {
                    if !AUTO_ARGS.contains(&name.as_str()) {
                        self.global.remove(&name);
                        self.global_refs.remove(&name);
                    }
                }
            }
        }
    }

    fn from(&mut self, f: &pd::FromInstruction<'_>) -> Cx {
        let name = f.as_.as_ref().map(|(_, n)| n.value.to_ascii_lowercase());
        let binding = match &name {
            Some(n) => self.bind(n, "stage"),
            None => self.bind(&format!("stage_{}", self.stages.len()), "stage"),
        };
        let mut cx = Cx {
            binding,
            name: name.clone(),
            chain: Vec::new(),
            vars: Vars::new(),
            view: Vars::new(),
            refs: HashMap::new(),
            env: Vec::new(),
            args: Vec::new(),
            shell: DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
            cwd: "/".into(),
            user: None,
            scripts: 0,
        };
        let global = self.global.clone();
        let refs: Vec<(String, usize)> = self
            .global_refs
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut platform = None;
        for flag in &f.options {
            if &*flag.name.value == "platform" {
                let raw = flag.value.as_ref().map_or("", |v| &v.value);
                if let Some(p) = shell::expand(raw, &global, self.escape)
                    .ok()
                    .and_then(|t| Platform::parse(&t).ok())
                {
                    platform = Some(p.normalized());
                }
            }
        }
        let image = shell::expand(&f.image.value, &global, self.escape).unwrap_or_default();
        let lower = image.to_ascii_lowercase();
        if let Some(prev) = self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            let p = &self.stages[prev];
            cx.chain.push(p.binding.clone());
            cx.env = p.env.clone();
            cx.vars = p.env.iter().cloned().collect();
            cx.view = cx.vars.clone();
            cx.cwd = p.cwd.clone();
            cx.user = p.user.clone();
        } else if lower == "scratch" {
            cx.chain.push("scratch()".into());
            cx.chain
                .push("    // BuildKit gives every stage a PATH; kiln's graph has it too".into());
            cx.push(format!("env(\"PATH\", {})", lit(kiln_dag::DEFAULT_PATH)));
            cx.set_env("PATH", kiln_dag::DEFAULT_PATH);
            cx.env.push(("PATH".into(), kiln_dag::DEFAULT_PATH.into()));
            // BuildKit's empty image works in `/`.
            cx.push("workdir(\"/\")".into());
        } else {
            let expr = self.template(&f.image.value, &global, &refs);
            let reference = kiln_types::Reference::parse(&image)
                .map(|r| r.normalized().to_string())
                .unwrap_or_else(|_| image.clone());
            let head = match &platform {
                Some(p) => {
                    let note = if f.options.iter().any(|o| {
                        o.value
                            .as_ref()
                            .is_some_and(|v| v.value.contains("BUILDPLATFORM"))
                    }) {
                        "  // `--platform=$BUILDPLATFORM` where this was converted"
                    } else {
                        ""
                    };
                    format!(
                        "image({}, [platform({})]){note}",
                        self.render(&expr),
                        lit(&p.to_string())
                    )
                }
                None => format!("image({})", self.render(&expr)),
            };
            cx.chain.push(head);
            let lookup = platform
                .clone()
                .or_else(|| self.opts.platform.clone())
                .unwrap_or_else(|| self.target_platform.clone());
            if let Ok(Some(base)) = self.bases.config(&reference, &lookup) {
                for kv in &base.env {
                    if let Some((k, v)) = kv.split_once('=') {
                        cx.set_env(k, v);
                    }
                }
                if let Some(w) = base.workdir.filter(|w| !w.is_empty()) {
                    cx.chain.push(
                        "    // the base image's working directory, which its RUNs start in".into(),
                    );
                    cx.cwd = kiln_dag::resolve_path("/", w.trim_end_matches('/'));
                    cx.push(format!("workdir({})", lit(&w)));
                }
                if !cx.vars.contains_key("PATH") {
                    cx.chain.push(
                        "    // the base image sets no PATH: BuildKit gives the stage one".into(),
                    );
                    cx.push(format!("env(\"PATH\", {})", lit(kiln_dag::DEFAULT_PATH)));
                    cx.set_env("PATH", kiln_dag::DEFAULT_PATH);
                    cx.env.push(("PATH".into(), kiln_dag::DEFAULT_PATH.into()));
                }
            }
        }
        cx
    }

    fn instruction(&mut self, cx: &mut Cx, ins: &I<'_>) {
        match ins {
            I::Arg(a) => self.stage_arg(cx, a),
            I::Env(e) => {
                let pairs = self.pairs(cx, &e.arguments.value, true);
                for (k, v, expr) in pairs {
                    let rendered = self.render(&expr);
                    cx.push(format!("env({}, {rendered})", lit(&k)));
                    cx.set_env(&k, &v);
                    match cx.env.iter_mut().find(|(ek, _)| *ek == k) {
                        Some(slot) => slot.1 = v,
                        None => cx.env.push((k, v)),
                    }
                }
            }
            I::Label(l) => {
                for (k, _, expr) in self.pairs(cx, &l.arguments.value, false) {
                    let rendered = self.render(&expr);
                    cx.push(format!("label({}, {rendered})", lit(&k)));
                }
            }
            I::Maintainer(m) => {
                cx.push(format!("label(\"maintainer\", {})", lit(&m.name.value)));
            }
            I::Workdir(w) => {
                let vars = cx.vars();
                let Ok(path) = shell::expand(&w.arguments.value, &vars, self.escape) else {
                    return;
                };
                let expr = self.template(&w.arguments.value, &vars, &cx.arg_refs());
                cx.push(format!("workdir({})", self.render(&expr)));
                cx.cwd = kiln_dag::resolve_path(&cx.cwd, path.trim_end_matches('/'));
                if cx.cwd != "/" {
                    // BuildKit creates the directory, as the current user.
                    let owner = match &cx.user {
                        Some(u) => format!(", [chown({})]", lit(u)),
                        None => String::new(),
                    };
                    cx.push(format!("mkdir({}{owner})", lit(&cx.cwd)));
                }
            }
            I::User(u) => {
                let vars = cx.vars();
                let Ok(user) = shell::expand(&u.arguments.value, &vars, self.escape) else {
                    return;
                };
                let expr = self.template(&u.arguments.value, &vars, &cx.arg_refs());
                cx.push(format!("user({})", self.render(&expr)));
                cx.user = Some(user);
            }
            I::Expose(e) => {
                let vars = cx.vars();
                for p in &e.arguments {
                    let Ok(ports) = shell::expand(&p.value, &vars, self.escape) else {
                        continue;
                    };
                    for port in ports.split_whitespace() {
                        let (num, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                        let ok_num = |n: &str| n.parse::<u16>().is_ok_and(|n| n > 0);
                        let nums = match num.split_once('-') {
                            Some((a, b)) => ok_num(a) && ok_num(b),
                            None => ok_num(num),
                        };
                        if !nums || !["tcp", "udp", "sctp"].contains(&proto) {
                            self.error(
                                &p.span,
                                format!("the port `{port}` has no Kilnfile form"),
                                "write the port from 1 to 65535 with a lower-case protocol, e.g. `EXPOSE 53/udp`",
                            );
                            continue;
                        }
                        if port.contains('/') || num.contains('-') {
                            cx.push(format!("expose({})", lit(port)));
                        } else {
                            cx.push(format!("expose({port})"));
                        }
                    }
                }
            }
            I::Volume(v) => {
                let vars = cx.vars();
                let items: Vec<&pd::UnescapedString<'_>> = match &v.arguments {
                    pd::JsonOrStringArray::Json(a) => a.value.iter().collect(),
                    pd::JsonOrStringArray::String(a) => a.iter().collect(),
                };
                for item in items {
                    let expr = self.template(&item.value, &vars, &cx.arg_refs());
                    cx.push(format!("volume({})", self.render(&expr)));
                }
            }
            I::Stopsignal(s) => {
                let vars = cx.vars();
                let expr = self.template(&s.arguments.value, &vars, &cx.arg_refs());
                cx.push(format!("stop_signal({})", self.render(&expr)));
            }
            I::Shell(s) => {
                cx.shell = s.arguments.iter().map(|a| a.value.to_string()).collect();
                cx.chain.push(format!(
                    "    // SHELL {}: the runs below go through it",
                    array(&cx.shell)
                ));
            }
            I::Cmd(c) => {
                let argv = self.command(cx, &c.arguments);
                cx.push(format!("cmd({})", array(&argv)));
            }
            I::Entrypoint(e) => {
                let argv = self.command(cx, &e.arguments);
                cx.push(format!("entrypoint({})", array(&argv)));
            }
            I::Healthcheck(h) => {
                let mut opts = Vec::new();
                for flag in &h.options {
                    let value = flag.value.as_ref().map_or("", |v| &v.value);
                    let name = match &*flag.name.value {
                        "interval" => "interval",
                        "timeout" => "timeout",
                        "start-period" => "start_period",
                        "start-interval" => "start_interval",
                        _ => {
                            opts.push(format!("retries({value})"));
                            continue;
                        }
                    };
                    opts.push(format!("{name}({})", lit(value)));
                }
                let opts = if opts.is_empty() {
                    String::new()
                } else {
                    format!(", [{}]", opts.join(", "))
                };
                match &h.arguments {
                    pd::HealthcheckArguments::Cmd { arguments, .. } => match arguments {
                        pd::Command::Exec(a) => {
                            let argv: Vec<String> =
                                a.value.iter().map(|s| s.value.to_string()).collect();
                            cx.push(format!("healthcheck({}{opts})", array(&argv)));
                        }
                        pd::Command::Shell(sh) => {
                            let cmd = text::join_continuations(sh.value, self.escape);
                            cx.push(format!("healthcheck({}{opts})", lit(&cmd)));
                        }
                        _ => {}
                    },
                    _ => cx.push("no_healthcheck()".into()),
                }
            }
            I::Onbuild(o) => {
                // The trigger as written after `ONBUILD`, continuations
                // joined, as `lower.rs` records it.
                let start = o.onbuild.span.end;
                let mut end = self.src.len();
                let mut at = start;
                while let Some(rest) = self.src.get(at..) {
                    let Some(nl) = rest.find('\n') else {
                        break;
                    };
                    let line = rest[..nl].trim_end_matches([' ', '\t', '\r']);
                    at += nl + 1;
                    if !line.ends_with(self.escape) {
                        end = at - 1;
                        break;
                    }
                }
                let raw = self.src.get(start..end).unwrap_or("");
                let trigger = text::join_continuations(raw, self.escape);
                cx.push(format!("onbuild({})", lit(trigger.trim())));
            }
            I::Run(r) => self.run_step(cx, r),
            I::Copy(c) => self.copy(cx, false, &c.copy.span, &c.options, &c.src, &c.dest),
            I::Add(a) => self.copy(cx, true, &a.add.span, &a.options, &a.src, &a.dest),
            other => {
                let span = lower::keyword_span(other);
                self.error(
                    &span,
                    "this instruction has no Kilnfile form",
                    "see docs/dockerfile.md for what converts",
                );
            }
        }
    }

    fn stage_arg(&mut self, cx: &mut Cx, a: &pd::ArgInstruction<'_>) {
        let Ok(words) = shell::split_words(&a.arguments.value, self.escape) else {
            return;
        };
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            let vars = cx.vars();
            let given = self.opts.build_args.get(&name).cloned();
            let (value, expr) = match (&given, &default) {
                (_, Some(d)) => {
                    let dexpr = self.template(d, &vars, &cx.arg_refs());
                    let value = given
                        .clone()
                        .or_else(|| shell::expand(d, &vars, self.escape).ok());
                    let id = self.new_arg(&name, Some(dexpr));
                    (value, Some(Expr::Arg(id)))
                }
                (Some(v), None) => {
                    let id = self.new_arg(&name, None);
                    (Some(v.clone()), Some(Expr::Arg(id)))
                }
                (None, None) => match self.global.get(&name) {
                    Some(v) => {
                        let e = match self.global_refs.get(&name) {
                            Some(id) => Expr::Arg(*id),
                            None => Expr::Lit(v.clone()),
                        };
                        (Some(v.clone()), Some(e))
                    }
                    None => (None, None),
                },
            };
            if let Some(v) = &value {
                cx.view.insert(name.clone(), v.clone());
                match &expr {
                    Some(Expr::Arg(id)) => cx.refs.insert(name.clone(), *id),
                    _ => cx.refs.remove(&name),
                };
            }
            cx.args.retain(|(n, _, _)| *n != name);
            cx.args.push((name, value, expr));
        }
    }

    /// `KEY=VALUE` pairs of `ENV` (`env`: each sees the ones before it) and
    /// `LABEL`, with each value's expression.
    fn pairs(&mut self, cx: &Cx, raw: &str, env: bool) -> Vec<(String, String, Expr)> {
        let Ok(words) = shell::split_words(raw, self.escape) else {
            return Vec::new();
        };
        let mut vars = cx.vars();
        let mut refs = cx.arg_refs();
        let mut out = Vec::new();
        if words.first().is_some_and(|w| !w.contains('=')) {
            let key = words[0].clone();
            let rest = raw.trim_start()[key.len()..].trim();
            if let Ok(v) = shell::expand(rest, &vars, self.escape) {
                let e = self.template(rest, &vars, &refs);
                out.push((key, v, e));
            }
            return out;
        }
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let (Ok(key), Ok(value)) = (
                shell::expand(k, &vars, self.escape),
                shell::expand(v, &vars, self.escape),
            ) else {
                continue;
            };
            let e = self.template(v, &vars, &refs);
            if env {
                vars.insert(key.clone(), value.clone());
                refs.retain(|(n, _)| *n != key);
            }
            out.push((key, value, e));
        }
        out
    }

    fn command(&self, cx: &Cx, c: &pd::Command<'_>) -> Vec<String> {
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

    fn run_step(&mut self, cx: &mut Cx, r: &pd::RunInstruction<'_>) {
        let vars = cx.vars();
        let mut opts: Vec<String> = Vec::new();
        let mut network = None;
        for flag in &r.options {
            let raw = flag.value.as_ref().map_or("", |v| &v.value);
            let Ok(value) = shell::expand(raw, &vars, self.escape) else {
                return;
            };
            match &*flag.name.value {
                "mount" => match self.mount(cx, &value, &flag.span()) {
                    Some(m) => opts.push(m),
                    None => return,
                },
                "network" if value == "none" => network = Some("network(\"none\")".to_string()),
                _ => {}
            }
        }
        // BuildKit gives a RUN its stage's args as variables of the step,
        // those no `ENV` set.
        for (k, v, e) in &cx.args {
            if v.is_some() && !cx.vars.contains_key(k) {
                let e = e
                    .clone()
                    .unwrap_or_else(|| Expr::Lit(v.clone().unwrap_or_default()));
                let rendered = self.render(&e);
                opts.push(format!("env({}, {rendered})", lit(k)));
            }
        }
        opts.extend(network);
        // the argv exactly as the lowering makes it (run.rs)
        let Ok((argv, script)) = crate::run::run_argv(self.src, self.escape, &cx.shell, r) else {
            return;
        };
        if let Some((name, data)) = script {
            cx.scripts += 1;
            let binding = self.bind(&format!("{}_script", cx.binding), "");
            self.items.push(Item::Text(format!(
                "// the `#!` heredoc of a RUN in `{}`, run as a program\nlet {binding} = scratch().file({}, {}, [mode(0o755)]);",
                cx.binding,
                lit(&format!("/{name}")),
                lit(&data)
            )));
            opts.insert(
                0,
                format!("bind({binding}.path(\"/\"), {})", lit(crate::run::PIPES)),
            );
        }
        let cmd = if argv.len() == 3 && argv[..2] == DEFAULT_SHELL {
            lit(&argv[2])
        } else {
            array(&argv)
        };
        if opts.is_empty() {
            cx.push(format!("run({cmd})"));
        } else {
            let sep = "\n        ";
            cx.push(format!(
                "run({cmd}, [{sep}{},\n    ])",
                opts.join(&format!(",{sep}"))
            ));
        }
    }

    /// One `--mount=` spec as a run option.
    fn mount(&mut self, cx: &Cx, spec: &str, span: &Range<usize>) -> Option<String> {
        // the spec read as the lowering reads it (run.rs)
        let fields = crate::run::MountFields::parse(spec);
        let get = |names: &[&str]| fields.get(names);
        let yes =
            |names: &[&str]| get(names).is_some_and(|v| v == "true" || v == "1" || v.is_empty());
        let target =
            get(&["target", "dst", "destination"]).map(|t| kiln_dag::resolve_path(&cx.cwd, &t));
        match get(&["type"]).as_deref().unwrap_or("bind") {
            "cache" => {
                let target = target?;
                let mut s = format!("cache({})", lit(&target));
                if let Some(id) = get(&["id"]).filter(|id| *id != target) {
                    let _ = write!(s, ".id({})", lit(&id));
                }
                match get(&["sharing"]).as_deref() {
                    Some("private") => s.push_str(".sharing(\"private\")"),
                    Some("locked") => s.push_str(".sharing(\"locked\")"),
                    _ => {}
                }
                Some(s)
            }
            "tmpfs" => {
                let mut s = format!("tmpfs({})", lit(&target?));
                if let Some(size) = get(&["size"]).and_then(|v| crate::run::parse_size(&v)) {
                    let _ = write!(s, ".size({size})");
                }
                Some(s)
            }
            "secret" => {
                let id = get(&["id"])
                    .or_else(|| {
                        target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let mut s = format!("secret({})", lit(&id));
                if let Some(env) = get(&["env"]) {
                    let _ = write!(s, ".env({})", lit(&env));
                } else if let Some(t) = target.filter(|t| *t != format!("/run/secrets/{id}")) {
                    let _ = write!(s, ".target({})", lit(&t));
                }
                if yes(&["required"]) {
                    s.push_str(".required(true)");
                }
                if get(&["env"]).is_none() {
                    file_attrs(&mut s, &fields, 0o400);
                }
                Some(s)
            }
            "ssh" => {
                let id = get(&["id"]).unwrap_or_else(|| "default".to_string());
                let mut s = if id == "default" {
                    "ssh()".to_string()
                } else {
                    format!("ssh({})", lit(&id))
                };
                if let Some(t) = target {
                    let _ = write!(s, ".target({})", lit(&t));
                }
                if yes(&["required"]) {
                    s.push_str(".required(true)");
                }
                file_attrs(&mut s, &fields, 0o600);
                Some(s)
            }
            _ => {
                let target = target?;
                let source = get(&["source", "src"]).unwrap_or_default();
                let from = match get(&["from"]) {
                    Some(f) => {
                        let st = self.stage_or_image(&f, span)?;
                        format!("{st}.path({})", lit(&kiln_dag::resolve_path("/", &source)))
                    }
                    None => {
                        let rel = kiln_dag::resolve_path("/", &source);
                        let rel = rel.trim_start_matches('/').trim_end_matches('/');
                        if rel.is_empty() {
                            "context()".to_string()
                        } else {
                            format!("context().path({})", lit(rel))
                        }
                    }
                };
                let rw = if yes(&["rw", "readwrite"]) {
                    ".rw()"
                } else {
                    ""
                };
                Some(format!("bind({from}, {}){rw}", lit(&target)))
            }
        }
    }

    /// The Kilnfile expression of `--from=NAME`: a stage binding, else an
    /// image.
    fn stage_or_image(&mut self, name: &str, span: &Range<usize>) -> Option<String> {
        let lower = name.to_ascii_lowercase();
        if let Some(s) = self
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(&lower))
        {
            return Some(s.binding.clone());
        }
        if let Ok(i) = name.parse::<usize>() {
            return match self.stages.get(i) {
                Some(s) => Some(s.binding.clone()),
                None => {
                    self.error(
                        span,
                        format!("no stage with index {name}"),
                        "name an earlier stage",
                    );
                    None
                }
            };
        }
        Some(format!("image({})", lit(name)))
    }

    fn copy(
        &mut self,
        cx: &mut Cx,
        add: bool,
        keyword: &Range<usize>,
        options: &[pd::Flag<'_>],
        srcs: &[pd::Source<'_>],
        dest: &pd::UnescapedString<'_>,
    ) {
        let vars = cx.vars();
        let mut from = None;
        let mut chown = None;
        let mut chmod = None;
        let mut chmod_symbolic = None;
        let mut exclude = Vec::new();
        // `ADD` extracts a source file that is an archive: `unpack()`
        let mut unpack = add;
        let mut parents = false;
        for flag in options {
            let raw = flag.value.as_ref().map_or("", |v| &v.value);
            let Ok(value) = shell::expand(raw, &vars, self.escape) else {
                return;
            };
            match &*flag.name.value {
                "from" => match self.stage_or_image(&value, &flag.span()) {
                    Some(f) => from = Some(f),
                    None => return,
                },
                "chown" => chown = Some(value),
                "chmod" => match u32::from_str_radix(&value, 8) {
                    Ok(m) => chmod = Some(m),
                    Err(_) => chmod_symbolic = Some(value),
                },
                "exclude" => exclude.push(value),
                "unpack" => unpack = value != "false",
                "parents" => parents = value != "false",
                _ => {}
            }
        }
        let Ok(mut dest_path) = shell::expand(&dest.value, &vars, self.escape) else {
            return;
        };
        if dest_path == "." || dest_path.ends_with("/.") {
            dest_path.push('/');
        }
        let into_dir = dest_path.ends_with('/');
        let line_end = self
            .src
            .get(keyword.start..)
            .unwrap_or("")
            .find('\n')
            .map_or(self.src.len(), |i| keyword.start + i);
        let markers = text::heredoc_markers(self.src.get(keyword.start..line_end).unwrap_or(""));
        let mut heredoc_index = 0;
        for src in srcs {
            match src {
                pd::Source::HereDoc(h) => {
                    let Some(m) = markers.get(heredoc_index).cloned() else {
                        return;
                    };
                    heredoc_index += 1;
                    let mut data = h.value.to_string();
                    if m.chomp {
                        data = text::chomp(&data);
                    }
                    if h.expand {
                        data = shell::expand_raw(&data, &vars, self.escape);
                    }
                    let path = if into_dir {
                        format!("{dest_path}{}", m.name)
                    } else {
                        dest_path.clone()
                    };
                    let mut o = Vec::new();
                    let mode = match (chmod, &chmod_symbolic) {
                        (Some(m), _) => m,
                        (None, Some(s)) => kiln_dag::SymbolicMode::parse(s)
                            .map_or(0o644, |m| m.apply(0o644, false)),
                        (None, None) => 0o644,
                    };
                    if mode != 0o644 {
                        o.push(format!("mode(0o{mode:o})"));
                    }
                    if let Some(c) = &chown {
                        o.push(format!("chown({})", lit(c)));
                    }
                    let o = if o.is_empty() {
                        String::new()
                    } else {
                        format!(", [{}]", o.join(", "))
                    };
                    cx.push(format!("file({}, {}{o})", lit(&path), lit(&data)));
                }
                pd::Source::Path(p) => {
                    let Ok(path) = shell::expand(&p.value, &vars, self.escape) else {
                        return;
                    };
                    let (dir, pattern) = crate::copy::split_source(&path, parents);
                    let dest_for = if pattern.is_some() && !into_dir {
                        format!("{dest_path}/")
                    } else {
                        dest_path.clone()
                    };
                    let source = match &from {
                        Some(st) => format!("{st}.path({})", lit(&dir)),
                        None => {
                            let rel = dir.trim_start_matches('/');
                            if rel.is_empty() {
                                "context()".to_string()
                            } else {
                                format!("context().path({})", lit(rel))
                            }
                        }
                    };
                    let mut o = Vec::new();
                    if let Some(c) = &chown {
                        o.push(format!("chown({})", lit(c)));
                    }
                    if let Some(m) = chmod {
                        o.push(format!("chmod(0o{m:o})"));
                    } else if let Some(m) = &chmod_symbolic {
                        o.push(format!("chmod({})", lit(m)));
                    }
                    if let Some(pat) = &pattern {
                        o.push(format!("include({})", lit(pat)));
                    }
                    for e in &exclude {
                        o.push(format!("exclude({})", lit(e)));
                    }
                    if unpack {
                        o.push("unpack()".into());
                    }
                    // as the Dockerfile's lowering: a stage's or image's
                    // owners stay, a symlink named as the source is followed
                    if from.is_some() {
                        if chown.is_none() {
                            o.push("keep_owner()".into());
                        }
                        o.push("follow_symlinks()".into());
                    }
                    let o = if o.is_empty() {
                        String::new()
                    } else {
                        format!(", [{}]", o.join(", "))
                    };
                    cx.push(format!("copy({source}, {}{o})", lit(&dest_for)));
                }
                _ => {}
            }
        }
    }

    /// `word` as an expression: a `format!` over the arg bindings it
    /// refers to when that gives the same text, else the expanded text.
    fn template(&mut self, word: &str, vars: &Vars, refs: &[(String, usize)]) -> Expr {
        let Ok(value) = shell::expand(word, vars, self.escape) else {
            return Expr::Lit(word.to_string());
        };
        let candidates: Vec<&(String, usize)> =
            refs.iter().filter(|(k, _)| vars.contains_key(k)).collect();
        if candidates.is_empty() {
            return Expr::Lit(value);
        }
        // Each arg gets a marker no real text holds; where the markers land
        // is where the bindings go.
        let mut marked = vars.clone();
        for (i, (k, _)) in candidates.iter().enumerate() {
            marked.insert(k.clone(), format!("\u{E000}{i}\u{E001}"));
        }
        let Ok(with_markers) = shell::expand(word, &marked, self.escape) else {
            return Expr::Lit(value);
        };
        let mut pieces = vec![String::new()];
        let mut ids = Vec::new();
        let mut rest = with_markers.as_str();
        while let Some(start) = rest.find('\u{E000}') {
            pieces
                .last_mut()
                .expect("one piece")
                .push_str(&rest[..start]);
            let after = &rest[start + '\u{E000}'.len_utf8()..];
            let Some(end) = after.find('\u{E001}') else {
                return Expr::Lit(value);
            };
            let Ok(i) = after[..end].parse::<usize>() else {
                return Expr::Lit(value);
            };
            ids.push(candidates[i].1);
            pieces.push(String::new());
            rest = &after[end + '\u{E001}'.len_utf8()..];
        }
        pieces.last_mut().expect("one piece").push_str(rest);
        if ids.is_empty() {
            return Expr::Lit(value);
        }
        // Only when the bindings' values give back the same text.
        let mut rebuilt = pieces[0].clone();
        for (i, id) in ids.iter().enumerate() {
            let name = &self.args[*id].name;
            rebuilt.push_str(vars.get(name).map_or("", String::as_str));
            rebuilt.push_str(&pieces[i + 1]);
        }
        if rebuilt != value {
            return Expr::Lit(value);
        }
        if pieces.len() == 2 && pieces.iter().all(String::is_empty) {
            return Expr::Arg(ids[0]);
        }
        Expr::Format(pieces, ids)
    }

    fn render(&mut self, e: &Expr) -> String {
        match e {
            Expr::Lit(s) => lit(s),
            Expr::Arg(id) => {
                self.args[*id].used = true;
                self.args[*id].binding.clone()
            }
            Expr::Format(pieces, ids) => {
                let fmt: String = pieces
                    .iter()
                    .map(|p| p.replace('{', "{{").replace('}', "}}"))
                    .collect::<Vec<_>>()
                    .join("{}");
                let mut out = format!("format!({}", lit(&fmt));
                for id in ids {
                    self.args[*id].used = true;
                    out.push_str(", ");
                    out.push_str(&self.args[*id].binding);
                }
                out.push(')');
                out
            }
        }
    }

    fn render_all(&mut self) -> Vec<String> {
        // Args' defaults may use other args: mark those used first.
        for i in (0..self.args.len()).rev() {
            if self.args[i].used
                && let Some(d) = self.args[i].default.clone()
            {
                let _ = self.render(&d);
            }
        }
        let items = std::mem::take(&mut self.items);
        let mut out = Vec::new();
        for item in items {
            match item {
                Item::Text(t) => out.push(t),
                Item::Arg(id) => {
                    let a = &self.args[id];
                    let binding = if a.used {
                        a.binding.clone()
                    } else {
                        format!("_{}", a.binding)
                    };
                    let name = lit(&a.name);
                    let text = match a.default.clone() {
                        Some(d) => format!("let {binding} = arg({name}, {});", self.render(&d)),
                        None => format!("let {binding} = arg({name});"),
                    };
                    out.push(text);
                }
            }
        }
        out
    }

    /// The Kilnfile: items in order, a blank line between bindings (none
    /// between a comment and what it describes, nor between args).
    fn text(&mut self, file_name: &str) -> String {
        let mut out = format!("// Converted from `{file_name}` by `kiln convert`.\n");
        let mut prev: Option<String> = None;
        for item in self.render_all() {
            let arg = |t: &str| t.starts_with("let ") && t.contains("= arg(") && !t.contains('\n');
            let blank = match &prev {
                None => true,
                Some(p) => !(p.starts_with("//") || arg(p) && arg(&item)),
            };
            if blank {
                out.push('\n');
            }
            out.push_str(&item);
            out.push('\n');
            prev = Some(item);
        }
        out
    }
}

/// `#` comment lines that stand between instructions (not the parser
/// directives, not inside a continued instruction or a heredoc), with their
/// offsets and text.
fn comments(src: &str, df: &pd::Dockerfile<'_>, escape: char) -> Vec<(usize, String)> {
    let mut heredocs: Vec<Range<usize>> = Vec::new();
    for ins in &df.instructions {
        let docs: &[pd::HereDoc<'_>] = match ins {
            I::Run(r) => &r.here_docs,
            _ => &[],
        };
        heredocs.extend(docs.iter().map(|h| h.span.clone()));
        let srcs: &[pd::Source<'_>] = match ins {
            I::Copy(c) => &c.src,
            I::Add(a) => &a.src,
            _ => &[],
        };
        for s in srcs {
            if let pd::Source::HereDoc(h) = s {
                heredocs.push(h.span.clone());
            }
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    let mut directives = true;
    let mut continued = false;
    for line in src.split_inclusive('\n') {
        let start = at;
        at += line.len();
        let t = line.trim();
        if heredocs.iter().any(|h| h.contains(&start)) {
            continue;
        }
        if let Some(body) = t.strip_prefix('#') {
            let body = body.trim();
            if directives {
                let key = body
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if body.contains('=') && ["syntax", "escape", "check"].contains(&key.as_str()) {
                    continue;
                }
            }
            directives = false;
            if !continued {
                out.push((start, body.to_string()));
            }
            continue;
        }
        directives = false;
        if t.is_empty() {
            continue;
        }
        continued = t.ends_with(escape);
    }
    out
}

/// A Kilnfile string literal.
fn lit(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn array(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| lit(s)).collect();
    format!("[{}]", parts.join(", "))
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

/// `.mode(..)`, `.uid(..)`, `.gid(..)` of a secret file or agent socket
/// mount, each only when it differs from the default (`mode`, root).
fn file_attrs(s: &mut String, fields: &crate::run::MountFields, mode: u32) {
    let num = |k: &str, radix: u32| {
        fields
            .get(&[k])
            .and_then(|v| u32::from_str_radix(&v, radix).ok())
    };
    if let Some(m) = num("mode", 8).filter(|m| *m != mode) {
        let _ = write!(s, ".mode(0o{m:o})");
    }
    if let Some(u) = num("uid", 10).filter(|u| *u != 0) {
        let _ = write!(s, ".uid({u})");
    }
    if let Some(g) = num("gid", 10).filter(|g| *g != 0) {
        let _ = write!(s, ".gid({g})");
    }
}
