//! The checker: evaluates a parsed Kilnfile, reporting every problem as a
//! diagnostic, and lowers image values into `kiln-dag` states as it goes.
//!
//! Evaluation is a single pass over the `let` items in order. A value that
//! failed to evaluate becomes `Value::Poison`, which is accepted everywhere
//! silently, so one mistake yields one diagnostic rather than a cascade.

use std::collections::{HashMap, HashSet};

use kiln_dag::{
    CacheSharing, Chown, CopyOptions, Exec, ExecMount, Location, Meta, Network, Platform, State,
};

use crate::Options;
use crate::ast::{Expr, ExprKind, File, Ident, MethodCall};
use crate::diag::Diagnostic;
use crate::span::{LineIndex, Span};

/// What an image value was rooted in, for the "no shell there" check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Registry,
    Local,
    /// `static_base()` or `scratch()`: no shell, `run` is an error.
    NoShell(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) state: State,
    root: Root,
    root_span: Span,
}

#[derive(Debug, Clone)]
pub(crate) enum PathFrom {
    /// The build context; `rel` is normalized and relative (`.` for all).
    Context,
    Stage(Box<Image>),
}

#[derive(Debug, Clone)]
pub(crate) struct PathRef {
    from: PathFrom,
    /// Absolute for stages, relative (normalized) for the context.
    path: String,
}

#[derive(Debug, Clone)]
pub(crate) enum Opt {
    Platform(Platform),
    Cache {
        target: String,
        id: Option<String>,
        sharing: CacheSharing,
    },
    Secret {
        id: String,
        target: Option<String>,
        required: bool,
        env: Option<String>,
        /// Mode, uid and gid of the secret file (`.mode`, `.uid`, `.gid`).
        file: (u32, u32, u32),
    },
    /// A variable for one `run` step only.
    Env(String, String),
    /// A healthcheck option: `interval`, `timeout`, `start_period`,
    /// `start_interval` (nanoseconds) or `retries`.
    Health(&'static str, u64),
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    /// The SSH agent `--ssh ID=SOCKET` forwarded into a `run` step.
    Ssh {
        id: String,
        target: Option<String>,
        required: bool,
        /// Mode, uid and gid of the socket (`.mode`, `.uid`, `.gid`).
        file: (u32, u32, u32),
    },
    Bind {
        from: Box<PathRef>,
        target: String,
        rw: bool,
    },
    Network(Network),
    Pids(u64),
    Chown(Chown),
    Chmod(u32),
    ChmodSymbolic(String),
    Mode(u32),
    Include(String),
    Exclude(String),
    AllowDynamic,
    Unpack,
    KeepOwner,
    FollowSymlinks,
}

impl Opt {
    fn name(&self) -> &'static str {
        match self {
            Opt::Platform(_) => "platform",
            Opt::Cache { .. } => "cache",
            Opt::Secret { .. } => "secret",
            Opt::Env(..) => "env",
            Opt::Health(what, _) => what,
            Opt::Tmpfs { .. } => "tmpfs",
            Opt::Ssh { .. } => "ssh",
            Opt::Bind { .. } => "bind",
            Opt::Network(_) => "network",
            Opt::Pids(_) => "pids",
            Opt::Chown(_) => "chown",
            Opt::Chmod(_) | Opt::ChmodSymbolic(_) => "chmod",
            Opt::Mode(_) => "mode",
            Opt::Include(_) => "include",
            Opt::Exclude(_) => "exclude",
            Opt::AllowDynamic => "allow_dynamic",
            Opt::Unpack => "unpack",
            Opt::KeepOwner => "keep_owner",
            Opt::FollowSymlinks => "follow_symlinks",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Value {
    Str(String),
    Int {
        value: u64,
        radix: u32,
    },
    Bool(bool),
    Array(Vec<(Value, Span)>),
    Image(Box<Image>),
    Context,
    Path(Box<PathRef>),
    Opt(Box<Opt>),
    /// `debian(..)`: a Debian package set, added with `.packages(..)`.
    Debian(Box<kiln_dag::DebianPackages>),
    /// `build_platform()` or `target_platform()`.
    Platform(Platform),
    /// Evaluation failed (already reported); accepted everywhere silently.
    Poison,
}

impl Value {
    fn describe(&self) -> String {
        match self {
            Value::Str(_) => "a string".into(),
            Value::Int { .. } => "an integer".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Array(_) => "an array".into(),
            Value::Image(_) => "an image".into(),
            Value::Context => "the build context".into(),
            Value::Path(_) => "a path".into(),
            Value::Opt(o) => format!("the option `{}(..)`", o.name()),
            Value::Debian(_) => "a Debian package set".into(),
            Value::Platform(_) => "a platform".into(),
            Value::Poison => "an invalid value".into(),
        }
    }
}

/// Signatures shown in `help:` lines, and the names "did you mean" picks from.
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "arg",
        "arg(name: string) or arg(name: string, default: string) -> string",
    ),
    (
        "image",
        "image(reference: string) or image(reference: string, [platform(\"os/arch\")]) -> image",
    ),
    ("context", "context() -> context"),
    ("scratch", "scratch() -> image"),
    ("static_base", "static_base() -> image"),
    (
        "oci_layout",
        "oci_layout(path: string) or oci_layout(path: string, tag: string) -> image",
    ),
    ("oci_archive", "oci_archive(path: string) -> image"),
    (
        "debian",
        "debian(suite: string) -> Debian package set, then .packages([..]) .exclude([..]) .mirror(url) .snapshot(\"YYYYMMDDTHHMMSSZ\") .components([..]) .arch(name) .keyring(path)",
    ),
    (
        "platform",
        "platform(\"os/arch[/variant]\") or platform(build_platform() | target_platform())",
    ),
    (
        "build_platform",
        "build_platform() -> platform: the machine that runs the build, then .os() .arch() .variant()",
    ),
    (
        "target_platform",
        "target_platform() -> platform: the one the image is built for, then .os() .arch() .variant()",
    ),
    (
        "cache",
        "cache(target: string), then .id(string) .sharing(\"shared\"|\"private\"|\"locked\")",
    ),
    (
        "secret",
        "secret(id: string), then .target(string) .required(bool) .env(name: string) .mode(0o400) .uid(n) .gid(n)",
    ),
    ("tmpfs", "tmpfs(target: string), then .size(bytes: integer)"),
    (
        "ssh",
        "ssh() or ssh(id: string), then .target(string) .required(bool) .mode(0o600) .uid(n) .gid(n)",
    ),
    ("bind", "bind(source: path, target: string), then .rw()"),
    ("network", "network(\"host\" | \"none\" | \"isolated\")"),
    ("pids", "pids(limit: integer, 1 to 4194304)"),
    (
        "env",
        "env(name: string, value: string): a variable for this `run` step only",
    ),
    ("interval", "interval(duration: string, e.g. \"30s\")"),
    ("timeout", "timeout(duration: string, e.g. \"5s\")"),
    (
        "start_period",
        "start_period(duration: string, e.g. \"1m30s\")",
    ),
    (
        "start_interval",
        "start_interval(duration: string, e.g. \"2s\")",
    ),
    ("retries", "retries(count: integer)"),
    ("chown", "chown(\"user[:group]\")"),
    (
        "chmod",
        "chmod(mode: octal integer, e.g. 0o755, or symbolic string, e.g. \"u+x,g-w\")",
    ),
    ("mode", "mode(mode: octal integer, e.g. 0o644)"),
    ("include", "include(glob: string)"),
    ("exclude", "exclude(glob: string)"),
    ("allow_dynamic", "allow_dynamic()"),
    ("unpack", "unpack()"),
    ("keep_owner", "keep_owner()"),
    ("follow_symlinks", "follow_symlinks()"),
];

const IMAGE_METHODS: &[(&str, &str)] = &[
    ("path", ".path(absolute: string) -> path"),
    (
        "run",
        ".run(command: string | [string]) or .run(command, [cache(..), secret(..), ssh(..), tmpfs(..), bind(..), network(..), pids(..), env(..)])",
    ),
    (
        "copy",
        ".copy(source: path, dest: string) or .copy(source, dest, [chown(..), chmod(..), include(..), exclude(..), allow_dynamic(), unpack(), keep_owner(), follow_symlinks()])",
    ),
    (
        "mkdir",
        ".mkdir(path: string) or .mkdir(path, [mode(..), chown(..)])",
    ),
    (
        "file",
        ".file(path: string, content: string) or .file(path, content, [mode(..), chown(..)])",
    ),
    ("symlink", ".symlink(target: string, link: string)"),
    ("rm", ".rm(path: string)"),
    ("env", ".env(key: string, value: string)"),
    ("workdir", ".workdir(path: string)"),
    ("user", ".user(user: string)"),
    ("entrypoint", ".entrypoint([string, ..])"),
    ("cmd", ".cmd([string, ..])"),
    ("label", ".label(key: string, value: string)"),
    ("expose", ".expose(port: integer | \"port/proto\")"),
    ("volume", ".volume(path: string)"),
    (
        "healthcheck",
        ".healthcheck(command: string | [string]) or .healthcheck(command, [interval(..), timeout(..), start_period(..), start_interval(..), retries(..)])",
    ),
    ("no_healthcheck", ".no_healthcheck()"),
    (
        "onbuild",
        ".onbuild(instruction: string): a Dockerfile trigger for images built on this one",
    ),
    ("stop_signal", ".stop_signal(signal: string)"),
    (
        "packages",
        ".packages(set: debian(\"bookworm\").packages([\"python3\", ..]))",
    ),
];

const DEBIAN_METHODS: &[(&str, &str)] = &[
    ("packages", ".packages([name: string, ..])"),
    ("exclude", ".exclude([name: string, ..])"),
    ("mirror", ".mirror(url: string)"),
    ("snapshot", ".snapshot(\"YYYYMMDDTHHMMSSZ\")"),
    ("components", ".components([name: string, ..])"),
    ("arch", ".arch(debian_architecture: string)"),
    ("keyring", ".keyring(context_path: string)"),
];

const CONTEXT_METHODS: &[(&str, &str)] = &[("path", ".path(relative: string) -> path")];
const PLATFORM_METHODS: &[(&str, &str)] = &[
    ("os", ".os() -> string, e.g. \"linux\""),
    (
        "arch",
        ".arch() -> string, e.g. \"amd64\", \"arm64\" (GOARCH's names)",
    ),
    (
        "variant",
        ".variant() -> string, e.g. \"v7\" for linux/arm/v7, \"\" when there is none",
    ),
];
const CACHE_METHODS: &[(&str, &str)] = &[
    ("id", ".id(id: string)"),
    ("sharing", ".sharing(\"shared\" | \"private\" | \"locked\")"),
];
const SECRET_METHODS: &[(&str, &str)] = &[
    ("target", ".target(path: string)"),
    ("required", ".required(bool)"),
    ("env", ".env(name: string)"),
    ("mode", ".mode(mode: octal integer, default 0o400)"),
    ("uid", ".uid(id: integer, default 0)"),
    ("gid", ".gid(id: integer, default 0)"),
];
const TMPFS_METHODS: &[(&str, &str)] = &[("size", ".size(bytes: integer)")];
const SSH_METHODS: &[(&str, &str)] = &[
    ("target", ".target(path: string)"),
    ("required", ".required(bool)"),
    ("mode", ".mode(mode: octal integer, default 0o600)"),
    ("uid", ".uid(id: integer, default 0)"),
    ("gid", ".gid(id: integer, default 0)"),
];
const BIND_METHODS: &[(&str, &str)] = &[("rw", ".rw()")];

fn sig(table: &[(&str, &'static str)], name: &str) -> &'static str {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, s)| s)
}

/// The closest candidate within a small edit distance.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let max = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        // Optimal string alignment: a swapped pair (`rnu`) counts as one edit.
        .map(|c| (strsim::osa_distance(&name.to_lowercase(), c), c))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

struct Binding {
    name_span: Span,
    value: Value,
    used: bool,
}

/// Result of evaluating a file.
pub(crate) struct Evaluated {
    /// Top-level image bindings in file order: the targets.
    pub(crate) targets: Vec<(String, Span, State)>,
    pub(crate) diags: Vec<Diagnostic>,
}

pub(crate) struct Eval<'a> {
    file_name: &'a str,
    src: &'a str,
    lines: LineIndex,
    opts: &'a Options,
    diags: Vec<Diagnostic>,
    bindings: HashMap<String, Binding>,
    /// Every name bound anywhere in the file, with its first definition.
    declared: HashMap<String, Span>,
    /// The binding being evaluated, for self-references and step names.
    current: String,
    used_args: HashSet<String>,
    names: bool,
}

type Arg = (Value, Span);

impl<'a> Eval<'a> {
    /// `names`: attach step names and locations to vertices (needed for a
    /// graph, not for a plain check, which skips the work).
    pub(crate) fn new(
        file_name: &'a str,
        src: &'a str,
        opts: &'a Options,
        names: bool,
    ) -> Eval<'a> {
        Eval {
            file_name,
            src,
            lines: LineIndex::new(src),
            opts,
            diags: Vec::new(),
            names,
            bindings: HashMap::new(),
            declared: HashMap::new(),
            current: String::new(),
            used_args: HashSet::new(),
        }
    }

    pub(crate) fn run(mut self, file: &File) -> Evaluated {
        self.declared.reserve(file.items.len());
        self.bindings.reserve(file.items.len());
        for item in &file.items {
            self.declared
                .entry(item.name.name.clone())
                .or_insert(item.name.span);
        }
        let mut order: Vec<String> = Vec::new();
        for item in &file.items {
            let name = &item.name.name;
            self.current = name.clone();
            let value = self.eval(&item.value);
            if let Some(prev) = self.bindings.get(name) {
                self.diags.push(
                    Diagnostic::error(
                        "kiln::duplicate-binding",
                        item.name.span,
                        format!("`{name}` is bound twice"),
                    )
                    .label("second binding")
                    .related(prev.name_span, "first bound here")
                    .help(format!(
                        "rename one of them; a binding names one value and is never reassigned (e.g. `{name}_2`)"
                    )),
                );
                order.retain(|n| n != name);
            }
            order.push(name.clone());
            self.bindings.insert(
                name.clone(),
                Binding {
                    name_span: item.name.span,
                    value,
                    used: false,
                },
            );
        }
        let mut targets = Vec::new();
        for name in &order {
            let b = &self.bindings[name];
            match &b.value {
                Value::Image(img) => targets.push((name.clone(), b.name_span, img.state.clone())),
                Value::Poison => {}
                _ if !b.used && !name.starts_with('_') => self.diags.push(
                    Diagnostic::warning(
                        "kiln::unused-binding",
                        b.name_span,
                        format!("`{name}` is never used"),
                    )
                    .label("bound here")
                    .help(format!(
                        "use it, remove it, or rename it to `_{name}` to silence this"
                    )),
                ),
                _ => {}
            }
        }
        let mut unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k))
            .collect();
        unused.sort();
        for k in unused {
            self.diags.push(
                Diagnostic {
                    severity: crate::diag::Severity::Warning,
                    ..Diagnostic::global(
                        "kiln::unused-build-arg",
                        format!("build arg `{k}` is not used by this Kilnfile"),
                    )
                }
                .help(format!(
                    "declare it with `arg(\"{k}\")` or drop `--build-arg {k}=...`"
                )),
            );
        }
        Evaluated {
            targets,
            diags: self.diags,
        }
    }

    /// Attach the step name and location beside the digest.
    fn named(&self, state: State, label: String, span: Span) -> State {
        if self.names {
            state.with_meta(self.meta(label, span))
        } else {
            state
        }
    }

    fn meta(&self, label: String, span: Span) -> Meta {
        Meta {
            name: Some(format!("{}: {label}", self.current)),
            location: Some(self.location(span)),
        }
    }

    fn location(&self, span: Span) -> Location {
        let lc = self.lines.line_col(self.src, span.start as usize);
        Location {
            file: self.file_name.to_string(),
            line: u32::try_from(lc.line).unwrap_or(u32::MAX),
            column: u32::try_from(lc.col).unwrap_or(u32::MAX),
        }
    }

    /// Where the value of the string literal at `span` starts in the
    /// source, when the literal spells it verbatim (no escapes), so a
    /// diagnostic about part of the string can point inside it.
    fn verbatim_start(&self, span: Span, value: &str) -> Option<usize> {
        let text = self.src.get(span.range())?;
        let open = text.strip_prefix('r').unwrap_or(text);
        let hashes = open.len() - open.trim_start_matches('#').len();
        let inner = open[hashes..]
            .strip_prefix('"')?
            .strip_suffix(&open[..hashes])?
            .strip_suffix('"')?;
        (inner == value).then(|| span.start as usize + text.len() - open.len() + hashes + 1)
    }

    fn err(
        &mut self,
        code: &'static str,
        span: Span,
        msg: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.diags
            .push(Diagnostic::error(code, span, msg).label(label).help(help));
    }

    // ---- expressions -------------------------------------------------

    fn eval(&mut self, e: &Expr) -> Value {
        match &e.kind {
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Int { value, radix } => Value::Int {
                value: *value,
                radix: *radix,
            },
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Array(items) => {
                Value::Array(items.iter().map(|i| (self.eval(i), i.span)).collect())
            }
            ExprKind::Var(id) => self.var(id, false),
            ExprKind::Call { func, args } => {
                let args: Vec<Arg> = args.iter().map(|a| (self.eval(a), a.span)).collect();
                self.call(func, args, e.span)
            }
            ExprKind::Macro { name, args } => {
                let args: Vec<Arg> = args.iter().map(|a| (self.eval(a), a.span)).collect();
                self.macro_call(name, args, e.span)
            }
            ExprKind::Chain { head, calls } => {
                // `x.path(..)` inside `let x = ...` is a stage copying from
                // itself; report that rather than a plain self-reference.
                let self_path = matches!(&head.kind, ExprKind::Var(id) if id.name == self.current)
                    && calls.first().is_some_and(|c| c.method.name == "path");
                let mut value = match &head.kind {
                    ExprKind::Var(id) => self.var(id, self_path),
                    _ => self.eval(head),
                };
                let mut recv_span = head.span;
                for call in calls {
                    let args: Vec<Arg> = call.args.iter().map(|a| (self.eval(a), a.span)).collect();
                    value = self.method(value, recv_span, call, args);
                    recv_span = recv_span.to(call.span);
                }
                value
            }
            ExprKind::Error => Value::Poison,
        }
    }

    fn var(&mut self, id: &Ident, self_path: bool) -> Value {
        let name = &id.name;
        if let Some(b) = self.bindings.get_mut(name)
            && *name != self.current
        {
            b.used = true;
            return b.value.clone();
        }
        if *name == self.current {
            if self_path {
                self.err(
                    "kiln::self-copy",
                    id.span,
                    format!("stage `{name}` copies from itself"),
                    "this is the stage being defined",
                    "a stage can only use files of stages defined before it: build the files in a separate `let` stage and copy from that",
                );
            } else {
                self.err(
                    "kiln::self-reference",
                    id.span,
                    format!("`{name}` is used in its own definition"),
                    "not defined yet",
                    "a binding can only use bindings defined above it",
                );
            }
            return Value::Poison;
        }
        if let Some(&def) = self.declared.get(name) {
            self.diags.push(
                Diagnostic::error(
                    "kiln::use-before-definition",
                    id.span,
                    format!("`{name}` is used before it is defined"),
                )
                .label("used here")
                .related(def, "defined later here")
                .help(format!(
                    "move `let {name} = ...;` above the binding that uses it"
                )),
            );
            return Value::Poison;
        }
        let mut names: Vec<&str> = self.bindings.keys().map(String::as_str).collect();
        names.sort();
        let mut help = match did_you_mean(name, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "bind it first with `let NAME = ...;`".to_string(),
        };
        if FUNCTIONS.iter().any(|(f, _)| f == name) {
            help = format!("`{name}` is a function: call it, `{name}(..)`");
        }
        self.err(
            "kiln::undefined-binding",
            id.span,
            format!("cannot find `{name}`"),
            "not defined",
            help,
        );
        Value::Poison
    }

    // ---- argument helpers -------------------------------------------

    /// Checks the argument count; reports and returns false when it is wrong.
    fn arity(
        &mut self,
        what: &str,
        signature: &str,
        span: Span,
        args: &[Arg],
        min: usize,
        max: usize,
    ) -> bool {
        let n = args.len();
        if (min..=max).contains(&n) {
            return true;
        }
        let expected = match (min, max) {
            (0, 0) => "no arguments".to_string(),
            (a, b) if a == b => format!("{a} argument{}", if a == 1 { "" } else { "s" }),
            (a, b) if b == a + 1 => format!("{a} or {b} arguments"),
            (a, b) => format!("{a} to {b} arguments"),
        };
        let label_span = if n > max {
            args[max].1.to(args[n - 1].1)
        } else {
            span
        };
        self.err(
            "kiln::arity",
            label_span,
            format!("`{what}` takes {expected}, found {n}"),
            if n > max {
                "unexpected arguments"
            } else {
                "arguments missing"
            },
            format!("expected `{signature}`"),
        );
        false
    }

    fn type_error(&mut self, arg: &Arg, expected: &str, signature: &str) {
        if matches!(arg.0, Value::Poison) {
            return;
        }
        self.err(
            "kiln::type",
            arg.1,
            format!("expected {expected}, found {}", arg.0.describe()),
            format!("this is {}", arg.0.describe()),
            format!("expected `{signature}`"),
        );
    }

    fn str_arg(&mut self, arg: &Arg, signature: &str) -> Option<String> {
        match &arg.0 {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.type_error(arg, "a string", signature);
                None
            }
        }
    }

    fn int_arg(&mut self, arg: &Arg, signature: &str) -> Option<(u64, u32)> {
        match &arg.0 {
            Value::Int { value, radix } => Some((*value, *radix)),
            _ => {
                self.type_error(arg, "an integer", signature);
                None
            }
        }
    }

    fn bool_arg(&mut self, arg: &Arg, signature: &str) -> Option<bool> {
        match &arg.0 {
            Value::Bool(b) => Some(*b),
            _ => {
                self.type_error(arg, "`true` or `false`", signature);
                None
            }
        }
    }

    fn strs_arg(&mut self, arg: &Arg, signature: &str) -> Option<Vec<String>> {
        match &arg.0 {
            Value::Array(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for item in items {
                    match self.str_arg(item, signature) {
                        Some(s) if self.no_nul(item.1, &s, "argument") => out.push(s),
                        _ => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.type_error(arg, "an array of strings", signature);
                None
            }
        }
    }

    fn opts_arg(
        &mut self,
        arg: Option<&Arg>,
        step: &str,
        allowed: &[&str],
        signature: &str,
    ) -> Option<Vec<Opt>> {
        let Some(arg) = arg else {
            return Some(Vec::new());
        };
        let Value::Array(items) = &arg.0 else {
            self.type_error(arg, "an array of options", signature);
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match &item.0 {
                Value::Opt(o) if allowed.contains(&o.name()) => out.push((**o).clone()),
                Value::Opt(o) => {
                    ok = false;
                    let list: Vec<String> = allowed.iter().map(|a| format!("{a}(..)")).collect();
                    self.err(
                        "kiln::bad-option",
                        item.1,
                        format!("`{}(..)` is not an option of `{step}`", o.name()),
                        "not accepted here",
                        format!("`{step}` takes: {}", list.join(", ")),
                    );
                }
                Value::Poison => ok = false,
                _ => {
                    ok = false;
                    self.type_error(item, "an option", signature);
                }
            }
        }
        ok.then_some(out)
    }

    /// `(mode, uid, gid)` of a secret file or an agent socket with `.mode`,
    /// `.uid` or `.gid` (`which`) set from `arg`.
    fn file_attr(
        &mut self,
        which: &str,
        arg: &Arg,
        signature: &str,
        (mode, uid, gid): (u32, u32, u32),
    ) -> Option<(u32, u32, u32)> {
        match which {
            "mode" => self.mode_arg(arg, signature).map(|m| (m, uid, gid)),
            "uid" => self.id_arg(arg, signature).map(|n| (mode, n, gid)),
            _ => self.id_arg(arg, signature).map(|n| (mode, uid, n)),
        }
    }

    /// Octal file mode, rejecting decimal literals such as `755`.
    fn mode_arg(&mut self, arg: &Arg, signature: &str) -> Option<u32> {
        let (value, radix) = self.int_arg(arg, signature)?;
        if radix == 10 && value != 0 {
            let digits = value.to_string();
            let help = if digits.chars().all(|c| ('0'..='7').contains(&c)) {
                format!("modes are octal: write `0o{digits}`")
            } else {
                "modes are octal: write them with the `0o` prefix, e.g. `0o755`".to_string()
            };
            self.err(
                "kiln::bad-mode",
                arg.1,
                format!("file mode `{digits}` is written in decimal"),
                "decimal literal",
                help,
            );
            return None;
        }
        if value > 0o7777 {
            self.err(
                "kiln::bad-mode",
                arg.1,
                format!("file mode `0o{value:o}` is out of range"),
                "more than 12 permission bits",
                "a mode is at most `0o7777` (setuid, setgid, sticky and rwx for user, group, other)",
            );
            return None;
        }
        Some(value as u32)
    }

    fn choice(
        &mut self,
        arg: &Arg,
        signature: &str,
        what: &str,
        allowed: &[&'static str],
    ) -> Option<&'static str> {
        let s = self.str_arg(arg, signature)?;
        if let Some(found) = allowed.iter().find(|a| **a == s) {
            return Some(found);
        }
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        let help = match did_you_mean(&s, allowed.iter().copied()) {
            Some(m) => format!("did you mean \"{m}\"? valid values: {}", list.join(", ")),
            None => format!("valid values: {}", list.join(", ")),
        };
        self.err(
            "kiln::bad-value",
            arg.1,
            format!("unknown {what} `{s}`"),
            format!("not a {what}"),
            help,
        );
        None
    }

    /// A duration as Docker writes one (`30s`, `1m30s`, `500ms`), in
    /// nanoseconds: `0`, or at least 1ms.
    fn duration_arg(&mut self, arg: &Arg, signature: &str) -> Option<u64> {
        let s = self.str_arg(arg, signature)?;
        match parse_duration(&s) {
            Some(n) if n == 0 || n >= 1_000_000 => Some(n),
            _ => {
                self.err(
                    "kiln::bad-value",
                    arg.1,
                    format!("invalid duration `{s}`"),
                    "not a duration of at least 1ms",
                    "write a duration such as \"30s\", \"1m30s\" or \"500ms\" (units ns, us, ms, s, m, h)",
                );
                None
            }
        }
    }

    /// A numeric user or group id of a secret file.
    fn id_arg(&mut self, arg: &Arg, signature: &str) -> Option<u32> {
        let (n, _) = self.int_arg(arg, signature)?;
        match u32::try_from(n) {
            Ok(id) if id != u32::MAX => Some(id),
            _ => {
                self.err(
                    "kiln::bad-value",
                    arg.1,
                    format!("id `{n}` is out of range"),
                    "not a uid or gid",
                    "a uid or gid is a number below 4294967295",
                );
                None
            }
        }
    }

    fn chown(&mut self, arg: &Arg, signature: &str) -> Option<Chown> {
        let s = self.str_arg(arg, signature)?;
        let (user, group) = self.owner(arg.1, &s, "owner")?;
        Some(Chown { user, group })
    }

    /// A process limit: at least the step's own process, at most the
    /// kernel's `PID_MAX_LIMIT` (more could never be reached).
    fn pids(&mut self, arg: &Arg, signature: &str) -> Option<u64> {
        const MAX: u64 = 4 * 1024 * 1024;
        let (n, _) = self.int_arg(arg, signature)?;
        if (1..=MAX).contains(&n) {
            return Some(n);
        }
        self.err(
            "kiln::bad-value",
            arg.1,
            format!("process limit `{n}` is out of range"),
            if n == 0 { "no process could start" } else { "more than the kernel allows" },
            format!("give a limit from 1 to {MAX}; without `pids(..)` a step gets the runtime's default (4096)"),
        );
        None
    }

    fn abs_path(&mut self, arg: &Arg, signature: &str, what: &str) -> Option<String> {
        let s = self.str_arg(arg, signature)?;
        if !self.no_nul(arg.1, &s, what) {
            return None;
        }
        if !s.starts_with('/') {
            self.err(
                "kiln::relative-path",
                arg.1,
                format!("{what} `{s}` is not absolute"),
                "relative path",
                format!(
                    "write an absolute path: \"/{}\"",
                    s.trim_start_matches("./")
                ),
            );
            return None;
        }
        Some(s)
    }

    /// Strings that become C strings (argv, environment, paths, the image
    /// config) end at a NUL byte: what ran or was recorded would not be what
    /// the Kilnfile says, so a NUL is an error at the string.
    fn no_nul(&mut self, span: Span, s: &str, what: &str) -> bool {
        if !s.contains('\0') {
            return true;
        }
        self.err(
            "kiln::nul-byte",
            span,
            format!("{what} contains a NUL byte"),
            "NUL byte in this string",
            "programs, paths and the image config cannot hold NUL (`\\0`, `\\x00`, `\\u{0}`): remove it",
        );
        false
    }

    /// `user[:group]` as `.user` and `chown` take it: names or numbers, a
    /// number a valid uid/gid. `4294967295` is `(uid_t)-1`, which
    /// setresuid/chown read as "leave unchanged": the step would stay root.
    fn owner(&mut self, span: Span, s: &str, what: &str) -> Option<(String, Option<String>)> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let bad = |p: &str| {
            p.is_empty() || p.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control())
        };
        if bad(user) || group.is_some_and(bad) {
            self.err(
                "kiln::bad-value",
                span,
                format!("invalid {what} `{}`", s.escape_debug()),
                "not `user[:group]`",
                "write a user and optional group, as names or numbers: \"65532:65532\" or \"nonroot\"",
            );
            return None;
        }
        for (kind, id) in [("user", Some(user)), ("group", group)] {
            let Some(id) = id.filter(|id| id.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            if id.parse::<u32>().is_ok_and(|n| n < u32::MAX) {
                continue;
            }
            self.err(
                "kiln::bad-value",
                span,
                format!("{kind} id `{id}` is out of range"),
                "not a valid user or group id",
                "numeric ids go from 0 to 4294967294 (4294967295 is the \"no id\" value, which would leave the step running as root)",
            );
            return None;
        }
        Some((user.to_string(), group.map(str::to_string)))
    }

    fn nonempty(&mut self, arg: &Arg, signature: &str, what: &str) -> Option<String> {
        let s = self.str_arg(arg, signature)?;
        if !self.no_nul(arg.1, &s, what) {
            return None;
        }
        if s.is_empty() {
            self.err(
                "kiln::bad-value",
                arg.1,
                format!("empty {what}"),
                "empty",
                format!("give a {what}"),
            );
            return None;
        }
        Some(s)
    }

    // ---- functions -----------------------------------------------------

    fn call(&mut self, func: &Ident, args: Vec<Arg>, span: Span) -> Value {
        let name = func.name.as_str();
        let Some(&(_, signature)) = FUNCTIONS.iter().find(|(n, _)| *n == name) else {
            let help = if IMAGE_METHODS.iter().any(|(m, _)| *m == name) {
                format!("`{name}` is a method of an image: `image(\"...\").{name}(..)`")
            } else if name == "format" {
                "`format` is a macro: `format!(\"{}\", x)`".to_string()
            } else {
                match did_you_mean(name, FUNCTIONS.iter().map(|(n, _)| *n)) {
                    Some(s) => format!("did you mean `{s}`? expected `{}`", sig(FUNCTIONS, s)),
                    None => format!(
                        "the functions are: {}",
                        FUNCTIONS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            };
            self.err(
                "kiln::unknown-function",
                func.span,
                format!("unknown function `{name}`"),
                "not a kiln function",
                help,
            );
            return Value::Poison;
        };
        let (min, max) = match name {
            "arg" | "image" | "oci_layout" => (1, 2),
            "context" | "scratch" | "static_base" | "allow_dynamic" | "unpack" | "keep_owner"
            | "follow_symlinks" | "build_platform" | "target_platform" => (0, 0),
            "ssh" => (0, 1),
            "bind" | "env" => (2, 2),
            _ => (1, 1),
        };
        if !self.arity(name, signature, span, &args, min, max) {
            return Value::Poison;
        }
        let r = |v: Option<Opt>| v.map_or(Value::Poison, |o| Value::Opt(Box::new(o)));
        match name {
            "arg" => self.build_arg(&args, signature),
            "image" => self.image(&args, span, signature),
            "context" => Value::Context,
            "scratch" => self.source(
                State::scratch(),
                Root::NoShell("scratch()"),
                span,
                "scratch".into(),
            ),
            "static_base" => self.source(
                State::static_base(),
                Root::NoShell("static_base()"),
                span,
                "static_base".into(),
            ),
            "oci_layout" => {
                let Some(path) = self.nonempty(&args[0], signature, "layout path") else {
                    return Value::Poison;
                };
                let tag = match args.get(1) {
                    Some(a) => match self.nonempty(a, signature, "tag") {
                        Some(t) => Some(t),
                        None => return Value::Poison,
                    },
                    None => None,
                };
                let label = format!("oci_layout {path}");
                self.source(State::oci_layout(path, tag), Root::Local, span, label)
            }
            "oci_archive" => {
                let Some(path) = self.nonempty(&args[0], signature, "archive path") else {
                    return Value::Poison;
                };
                let label = format!("oci_archive {path}");
                self.source(State::oci_archive(path), Root::Local, span, label)
            }
            "build_platform" => Value::Platform(self.build_platform()),
            "target_platform" => Value::Platform(self.target_platform()),
            "platform" => {
                if let Value::Platform(p) = &args[0].0 {
                    return Value::Opt(Box::new(Opt::Platform(p.clone())));
                }
                let Some(s) = self.str_arg(&args[0], signature) else {
                    return Value::Poison;
                };
                match s.parse::<Platform>() {
                    Ok(p) => Value::Opt(Box::new(Opt::Platform(p))),
                    Err(_) => {
                        self.err(
                            "kiln::bad-value",
                            args[0].1,
                            format!("invalid platform `{s}`"),
                            "not `os/arch[/variant]`",
                            "write e.g. \"linux/amd64\", \"linux/arm64\" or \"linux/arm/v7\"",
                        );
                        Value::Poison
                    }
                }
            }
            "cache" => r(self
                .abs_path(&args[0], signature, "cache mount target")
                .map(|target| Opt::Cache {
                    target,
                    id: None,
                    sharing: CacheSharing::Shared,
                })),
            "secret" => r(self
                .nonempty(&args[0], signature, "secret id")
                .map(|id| Opt::Secret {
                    id,
                    target: None,
                    required: false,
                    env: None,
                    file: (0o400, 0, 0),
                })),
            "ssh" => {
                let id = match args.first() {
                    Some(a) => self.nonempty(a, signature, "ssh id"),
                    None => Some("default".to_string()),
                };
                r(id.map(|id| Opt::Ssh {
                    id,
                    target: None,
                    required: false,
                    file: (0o600, 0, 0),
                }))
            }
            "tmpfs" => r(self
                .abs_path(&args[0], signature, "tmpfs target")
                .map(|target| Opt::Tmpfs { target, size: None })),
            "bind" => {
                let from = match &args[0].0 {
                    Value::Path(p) => Some(p.clone()),
                    Value::Context => Some(Box::new(PathRef {
                        from: PathFrom::Context,
                        path: ".".into(),
                    })),
                    _ => {
                        self.type_error(
                            &args[0],
                            "a path (`context().path(\"dir\")` or `stage.path(\"/dir\")`)",
                            signature,
                        );
                        None
                    }
                };
                let target = self.abs_path(&args[1], signature, "bind mount target");
                match (from, target) {
                    (Some(from), Some(target)) => Value::Opt(Box::new(Opt::Bind {
                        from,
                        target,
                        rw: false,
                    })),
                    _ => Value::Poison,
                }
            }
            "network" => r(self
                .choice(
                    &args[0],
                    signature,
                    "network mode",
                    &["host", "none", "isolated"],
                )
                .map(|n| {
                    Opt::Network(match n {
                        "host" => Network::Host,
                        "none" => Network::None,
                        _ => Network::Isolated,
                    })
                })),
            "pids" => r(self.pids(&args[0], signature).map(Opt::Pids)),
            "interval" | "timeout" | "start_period" | "start_interval" => {
                let what = match name {
                    "interval" => "interval",
                    "timeout" => "timeout",
                    "start_period" => "start_period",
                    _ => "start_interval",
                };
                r(self
                    .duration_arg(&args[0], signature)
                    .map(|n| Opt::Health(what, n)))
            }
            "retries" => {
                r(self
                    .int_arg(&args[0], signature)
                    .and_then(|(n, _)| match u32::try_from(n) {
                        Ok(_) => Some(Opt::Health("retries", n)),
                        Err(_) => {
                            self.err(
                                "kiln::bad-value",
                                args[0].1,
                                format!("`{n}` retries is out of range"),
                                "too many",
                                "give a count below 4294967296",
                            );
                            None
                        }
                    }))
            }
            "env" => {
                let name = self.nonempty(&args[0], signature, "environment variable name");
                let value = self
                    .str_arg(&args[1], signature)
                    .filter(|v| self.no_nul(args[1].1, v, "environment variable value"));
                match (name, value) {
                    (Some(k), Some(v)) if !k.contains('=') && !k.contains('\0') => {
                        Value::Opt(Box::new(Opt::Env(k, v)))
                    }
                    (Some(k), Some(_)) => {
                        self.err(
                            "kiln::bad-value",
                            args[0].1,
                            format!("invalid environment variable name `{k}`"),
                            "not a variable name",
                            "names cannot contain `=`: give the name and value separately, `env(\"KEY\", \"value\")`",
                        );
                        Value::Poison
                    }
                    _ => Value::Poison,
                }
            }
            "chown" => r(self.chown(&args[0], signature).map(Opt::Chown)),
            "chmod" => match &args[0].0 {
                Value::Str(s) => match kiln_dag::SymbolicMode::parse(s) {
                    Ok(_) => Value::Opt(Box::new(Opt::ChmodSymbolic(s.clone()))),
                    Err(e) => {
                        self.err(
                            "kiln::bad-mode",
                            args[0].1,
                            format!("invalid symbolic mode `{s}`"),
                            e.reason,
                            "write clauses of who (`ugoa`), `+`/`-`/`=` and permissions (`rwxXst`), e.g. `\"u+x,g-w\"`, or an octal `0o755`",
                        );
                        Value::Poison
                    }
                },
                _ => r(self.mode_arg(&args[0], signature).map(Opt::Chmod)),
            },
            "mode" => r(self.mode_arg(&args[0], signature).map(Opt::Mode)),
            "include" => r(self
                .nonempty(&args[0], signature, "pattern")
                .map(Opt::Include)),
            "exclude" => r(self
                .nonempty(&args[0], signature, "pattern")
                .map(Opt::Exclude)),
            "allow_dynamic" => Value::Opt(Box::new(Opt::AllowDynamic)),
            "unpack" => Value::Opt(Box::new(Opt::Unpack)),
            "keep_owner" => Value::Opt(Box::new(Opt::KeepOwner)),
            "follow_symlinks" => Value::Opt(Box::new(Opt::FollowSymlinks)),
            "debian" => match self.nonempty(&args[0], signature, "suite") {
                Some(suite) if Self::debian_name(&suite) => {
                    Value::Debian(Box::new(kiln_dag::DebianPackages {
                        mirror: None,
                        suite,
                        components: Vec::new(),
                        arch: None,
                        snapshot: None,
                        keyrings: Vec::new(),
                        packages: Vec::new(),
                        exclude: Vec::new(),
                    }))
                }
                Some(suite) => {
                    self.err(
                        "kiln::bad-value",
                        args[0].1,
                        format!("invalid suite `{suite}`"),
                        "not a suite name",
                        "name a Debian suite or codename, e.g. \"bookworm\" or \"stable\"",
                    );
                    Value::Poison
                }
                None => Value::Poison,
            },
            _ => Value::Poison,
        }
    }

    fn source(&mut self, state: State, root: Root, span: Span, label: String) -> Value {
        Value::Image(Box::new(Image {
            state: self.named(state, label, span),
            root,
            root_span: span,
        }))
    }

    fn build_arg(&mut self, args: &[Arg], signature: &str) -> Value {
        let Some(name) = self.str_arg(&args[0], signature) else {
            return Value::Poison;
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.err(
                "kiln::bad-value",
                args[0].1,
                format!("invalid build arg name `{name}`"),
                "not a valid name",
                "build arg names are letters, digits and `_`, not starting with a digit, e.g. \"GO_VERSION\"",
            );
            return Value::Poison;
        }
        let default = match args.get(1) {
            Some(a) => match self.str_arg(a, signature) {
                Some(d) => Some(d),
                None => return Value::Poison,
            },
            None => None,
        };
        self.used_args.insert(name.clone());
        match self.opts.build_args.get(&name).cloned().or(default) {
            Some(v) => Value::Str(v),
            None => {
                self.err(
                    "kiln::missing-build-arg",
                    args[0].1,
                    format!("build arg `{name}` has no value and no default"),
                    "no value",
                    format!("pass `--build-arg {name}=VALUE`, or give a default: `arg(\"{name}\", \"VALUE\")`"),
                );
                Value::Poison
            }
        }
    }

    fn image(&mut self, args: &[Arg], span: Span, signature: &str) -> Value {
        let Some(raw) = self.str_arg(&args[0], signature) else {
            return Value::Poison;
        };
        // The canonical form is what the vertex digests, so every spelling
        // of one image is one source.
        let reference = match kiln_types::Reference::parse(&raw) {
            Ok(r) => r.normalized().to_string(),
            Err(e) => {
                let span = match self.verbatim_start(args[0].1, &raw) {
                    Some(at) => Span::new(at + e.span.start, at + e.span.end),
                    None => args[0].1,
                };
                let help = e.kind.fix().unwrap_or_else(|| {
                    "write e.g. \"docker.io/library/debian:bookworm\" or \"debian@sha256:<64 hex digits>\""
                        .to_string()
                });
                self.err(
                    "kiln::bad-reference",
                    span,
                    e.kind.to_string(),
                    format!("expected {}", e.kind.expected()),
                    help,
                );
                return Value::Poison;
            }
        };
        let Some(opts) = self.opts_arg(args.get(1), "image", &["platform"], signature) else {
            return Value::Poison;
        };
        let platform = opts
            .into_iter()
            .filter_map(|o| match o {
                Opt::Platform(p) => Some(p),
                _ => None,
            })
            .next_back()
            .or_else(|| self.opts.platform.clone());
        let label = format!("image {reference}");
        // Distroless-style images have no shell either (`lint.rs`).
        let root = if crate::lint::no_shell(&reference) {
            Root::NoShell("a distroless image")
        } else {
            Root::Registry
        };
        self.source(State::image(reference, platform), root, span, label)
    }

    fn macro_call(&mut self, name: &Ident, args: Vec<Arg>, span: Span) -> Value {
        const SIG: &str = "format!(\"text {} text\", value, ..)";
        if name.name != "format" {
            let help = match did_you_mean(&name.name, ["format"]) {
                Some(_) => "did you mean `format!`?".to_string(),
                None => "the only macro is `format!(\"{}\", value, ..)`".to_string(),
            };
            self.err(
                "kiln::unknown-function",
                name.span,
                format!("unknown macro `{}!`", name.name),
                "not a kiln macro",
                help,
            );
            return Value::Poison;
        }
        if args.is_empty() {
            self.err(
                "kiln::arity",
                span,
                "`format!` needs a format string",
                "arguments missing",
                format!("expected `{SIG}`"),
            );
            return Value::Poison;
        }
        let Some(fmt) = self.str_arg(&args[0], SIG) else {
            return Value::Poison;
        };
        let mut values = Vec::new();
        let mut ok = true;
        for a in &args[1..] {
            match &a.0 {
                Value::Str(s) => values.push(s.clone()),
                Value::Int { value, .. } => values.push(value.to_string()),
                Value::Platform(p) => values.push(p.to_string()),
                Value::Poison => ok = false,
                _ => {
                    self.type_error(a, "a string, an integer or a platform", SIG);
                    ok = false;
                }
            }
        }
        // Render `{}` placeholders and `{{`/`}}` escapes.
        let mut out = String::new();
        let mut next = 0usize;
        let mut chars = fmt.chars().peekable();
        let mut bad = None;
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    out.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    out.push('}');
                }
                '{' if chars.peek() == Some(&'}') => {
                    chars.next();
                    if let Some(v) = values.get(next) {
                        out.push_str(v);
                    }
                    next += 1;
                }
                '{' | '}' => {
                    bad = Some(c);
                    break;
                }
                c => out.push(c),
            }
        }
        if let Some(c) = bad {
            self.err(
                "kiln::bad-format",
                args[0].1,
                format!("invalid format string: unmatched `{c}`"),
                "bad format string",
                "only positional `{}` placeholders are supported; write `{{` and `}}` for literal braces",
            );
            return Value::Poison;
        }
        if ok && next != args.len() - 1 {
            self.err(
                "kiln::bad-format",
                span,
                format!(
                    "format string has {next} placeholder{} but {} value{} given",
                    if next == 1 { "" } else { "s" },
                    args.len() - 1,
                    if args.len() == 2 { " is" } else { "s are" }
                ),
                "count mismatch",
                "give exactly one value per `{}`",
            );
            return Value::Poison;
        }
        if !ok {
            return Value::Poison;
        }
        Value::Str(out)
    }

    // ---- methods -------------------------------------------------------

    fn method(&mut self, recv: Value, recv_span: Span, call: &MethodCall, args: Vec<Arg>) -> Value {
        // A bad step on an image is reported and skipped, so the rest of the
        // chain is still checked (e.g. a later `run` on `static_base()`); a
        // bad `.path` stays poisoned.
        match (self.method_inner(&recv, recv_span, call, args), recv) {
            (Value::Poison, Value::Image(img)) if call.method.name != "path" => Value::Image(img),
            (v, _) => v,
        }
    }

    fn method_inner(
        &mut self,
        recv: &Value,
        recv_span: Span,
        call: &MethodCall,
        args: Vec<Arg>,
    ) -> Value {
        let name = call.method.name.as_str();
        let (table, kind): (&[(&str, &'static str)], &str) = match recv {
            Value::Poison => return Value::Poison,
            Value::Image(_) => (IMAGE_METHODS, "an image"),
            Value::Context => (CONTEXT_METHODS, "the build context"),
            Value::Debian(_) => (DEBIAN_METHODS, "a Debian package set"),
            Value::Platform(_) => (PLATFORM_METHODS, "a platform"),
            Value::Opt(o) => match **o {
                Opt::Cache { .. } => (CACHE_METHODS, "`cache(..)`"),
                Opt::Secret { .. } => (SECRET_METHODS, "`secret(..)`"),
                Opt::Tmpfs { .. } => (TMPFS_METHODS, "`tmpfs(..)`"),
                Opt::Ssh { .. } => (SSH_METHODS, "`ssh(..)`"),
                Opt::Bind { .. } => (BIND_METHODS, "`bind(..)`"),
                _ => (&[], "an option"),
            },
            _ => (&[], ""),
        };
        let kind = if kind.is_empty() {
            recv.describe()
        } else {
            kind.to_string()
        };
        let Some(&(_, signature)) = table.iter().find(|(n, _)| *n == name) else {
            let help = match did_you_mean(name, table.iter().map(|(n, _)| *n)) {
                Some(s) => format!("did you mean `.{s}`? expected `{}`", sig(table, s)),
                None if table.is_empty() => format!("{kind} has no methods"),
                None => format!(
                    "methods of {kind}: {}",
                    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            };
            self.err(
                "kiln::unknown-method",
                call.method.span,
                format!("no method `{name}` on {kind}"),
                "unknown method",
                help,
            );
            return Value::Poison;
        };
        let span = call.span;
        let (min, max) = match name {
            "run" | "mkdir" => (1, 2),
            "copy" | "file" => (2, 3),
            "env" | "label" | "symlink" => (2, 2),
            "rw" | "no_healthcheck" => (0, 0),
            "healthcheck" => (1, 2),
            _ => (1, 1),
        };
        // `.env` on a secret takes one argument, a platform's parts none.
        let (min, max) = match recv {
            Value::Opt(_) if name == "env" => (1, 1),
            Value::Platform(_) => (0, 0),
            _ => (min, max),
        };
        if !(min..=max).contains(&args.len())
            && !self.arity(&format!(".{name}"), signature, span, &args, min, max)
        {
            return Value::Poison;
        }
        match recv {
            Value::Image(img) => self.image_method(img, recv_span, name, signature, span, &args),
            Value::Context => match self.context_path(&args[0], signature) {
                Some(path) => Value::Path(Box::new(PathRef {
                    from: PathFrom::Context,
                    path,
                })),
                None => Value::Poison,
            },
            Value::Opt(o) => self.opt_method((**o).clone(), name, signature, &args),
            Value::Debian(d) => self.debian_method((**d).clone(), name, signature, &args),
            Value::Platform(p) => Value::Str(match name {
                "os" => p.os.clone(),
                "arch" => p.architecture.clone(),
                _ => p.variant.clone().unwrap_or_default(),
            }),
            _ => Value::Poison,
        }
    }

    /// The platform the image is built for: `--platform` (one build per
    /// platform when it names several), else this machine's.
    fn target_platform(&self) -> Platform {
        (self.opts.platform.clone()).unwrap_or_else(Platform::host)
    }

    fn build_platform(&self) -> Platform {
        (self.opts.build_platform.clone()).unwrap_or_else(Platform::host)
    }

    /// Suite, component and architecture names: URL path segments.
    fn debian_name(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._+~".contains(&b))
            && s != "."
            && s != ".."
    }

    /// Debian package names (Policy 5.6.1), with an optional `:arch`.
    fn package_name(s: &str) -> bool {
        let (name, arch) = s.split_once(':').unwrap_or((s, ""));
        name.len() >= 2
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
            && (arch.is_empty() && !s.contains(':') || Self::debian_name(arch))
    }

    /// Names checked one by one, each error at its own array item.
    fn package_names(&mut self, arg: &Arg, signature: &str, what: &str) -> Option<Vec<String>> {
        let names = self.strs_arg(arg, signature)?;
        let Value::Array(items) = &arg.0 else {
            return None;
        };
        let mut ok = true;
        for (name, item) in names.iter().zip(items) {
            if !Self::package_name(name) {
                ok = false;
                self.err(
                    "kiln::bad-value",
                    item.1,
                    format!("invalid {what} `{name}`"),
                    "not a Debian package name",
                    "package names are lower case letters, digits and `+-.`, at least two long, e.g. \"python3\" or \"libstdc++6\"",
                );
            }
        }
        ok.then_some(names)
    }

    fn debian_method(
        &mut self,
        mut d: kiln_dag::DebianPackages,
        name: &str,
        signature: &str,
        args: &[Arg],
    ) -> Value {
        let arg = &args[0];
        match name {
            "packages" => match self.package_names(arg, signature, "package name") {
                Some(p) => d.packages.extend(p),
                None => return Value::Poison,
            },
            "exclude" => match self.package_names(arg, signature, "excluded package") {
                Some(p) => d.exclude.extend(p),
                None => return Value::Poison,
            },
            "mirror" => {
                let Some(url) = self.nonempty(arg, signature, "repository URL") else {
                    return Value::Poison;
                };
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                    self.err(
                        "kiln::bad-value",
                        arg.1,
                        format!("invalid repository URL `{url}`"),
                        "not an http(s) URL",
                        "write the archive root, the URL before `dists/`, e.g. \"http://deb.debian.org/debian\"",
                    );
                    return Value::Poison;
                }
                d.mirror = Some(url.trim_end_matches('/').to_string());
                d.snapshot = None;
            }
            "snapshot" => {
                let Some(t) = self.nonempty(arg, signature, "snapshot time") else {
                    return Value::Poison;
                };
                let b = t.as_bytes();
                let ok = b.len() == 16
                    && b[8] == b'T'
                    && b[15] == b'Z'
                    && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
                if !ok {
                    self.err(
                        "kiln::bad-value",
                        arg.1,
                        format!("invalid snapshot time `{t}`"),
                        "not `YYYYMMDDTHHMMSSZ`",
                        "write a snapshot.debian.org time in UTC, e.g. \"20250520T000000Z\"",
                    );
                    return Value::Poison;
                }
                d.snapshot = Some(t);
                d.mirror = None;
            }
            "components" => {
                let Some(c) = self.strs_arg(arg, signature) else {
                    return Value::Poison;
                };
                if c.is_empty() || !c.iter().all(|c| Self::debian_name(c)) {
                    self.err(
                        "kiln::bad-value",
                        arg.1,
                        "invalid components",
                        "not a list of component names",
                        "name one or more components, e.g. [\"main\", \"contrib\"]",
                    );
                    return Value::Poison;
                }
                d.components = c;
            }
            "arch" => {
                let Some(a) = self.nonempty(arg, signature, "architecture") else {
                    return Value::Poison;
                };
                if !Self::debian_name(&a) {
                    self.err(
                        "kiln::bad-value",
                        arg.1,
                        format!("invalid architecture `{a}`"),
                        "not a Debian architecture name",
                        "write Debian's name, e.g. \"amd64\", \"arm64\" or \"armhf\"",
                    );
                    return Value::Poison;
                }
                d.arch = Some(a);
            }
            "keyring" => match self.context_path(arg, signature) {
                Some(p) => d.keyrings.push(p),
                None => return Value::Poison,
            },
            _ => return Value::Poison,
        }
        Value::Debian(Box::new(d))
    }

    fn context_path(&mut self, arg: &Arg, signature: &str) -> Option<String> {
        let s = self.str_arg(arg, signature)?;
        if !self.no_nul(arg.1, &s, "context path") {
            return None;
        }
        if s.starts_with('/') {
            self.err(
                "kiln::context-path",
                arg.1,
                format!("context path `{s}` is absolute"),
                "absolute path",
                format!(
                    "context paths are relative to the context directory: write \"{}\"",
                    s.trim_start_matches('/')
                ),
            );
            return None;
        }
        let mut parts: Vec<&str> = Vec::new();
        for seg in s.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if parts.pop().is_none() {
                        self.err(
                            "kiln::context-escape",
                            arg.1,
                            format!("context path `{s}` leaves the build context"),
                            "`..` goes above the context root",
                            "only files inside the context can be used; move the file into the context or pass a larger context directory",
                        );
                        return None;
                    }
                }
                p => parts.push(p),
            }
        }
        Some(if parts.is_empty() {
            ".".into()
        } else {
            parts.join("/")
        })
    }

    fn opt_method(&mut self, opt: Opt, name: &str, signature: &str, args: &[Arg]) -> Value {
        let out = match (opt, name) {
            (
                Opt::Cache {
                    target, sharing, ..
                },
                "id",
            ) => self
                .nonempty(&args[0], signature, "cache id")
                .map(|id| Opt::Cache {
                    target,
                    id: Some(id),
                    sharing,
                }),
            (Opt::Cache { target, id, .. }, "sharing") => self
                .choice(
                    &args[0],
                    signature,
                    "sharing mode",
                    &["shared", "private", "locked"],
                )
                .map(|s| Opt::Cache {
                    target,
                    id,
                    sharing: match s {
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => CacheSharing::Shared,
                    },
                }),
            (
                Opt::Secret {
                    id,
                    required,
                    env,
                    file,
                    ..
                },
                "target",
            ) => self
                .abs_path(&args[0], signature, "secret target")
                .map(|t| Opt::Secret {
                    id,
                    target: Some(t),
                    required,
                    env,
                    file,
                }),
            (
                Opt::Secret {
                    id,
                    target,
                    env,
                    file,
                    ..
                },
                "required",
            ) => self
                .bool_arg(&args[0], signature)
                .map(|required| Opt::Secret {
                    id,
                    target,
                    required,
                    env,
                    file,
                }),
            (
                Opt::Secret {
                    id,
                    target,
                    required,
                    env,
                    file,
                },
                which @ ("mode" | "uid" | "gid"),
            ) => self
                .file_attr(which, &args[0], signature, file)
                .map(|file| Opt::Secret {
                    id,
                    target,
                    required,
                    env,
                    file,
                }),
            (
                Opt::Secret {
                    id,
                    target,
                    required,
                    file,
                    ..
                },
                "env",
            ) => {
                let Some(name) = self.str_arg(&args[0], signature) else {
                    return Value::Poison;
                };
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if valid {
                    Some(Opt::Secret {
                        id,
                        target,
                        required,
                        env: Some(name),
                        file,
                    })
                } else {
                    self.err(
                        "kiln::bad-value",
                        args[0].1,
                        format!("invalid environment variable name `{name}`"),
                        "not a variable name",
                        "variable names are letters, digits and `_`, e.g. \"NPM_TOKEN\"",
                    );
                    None
                }
            }
            (
                Opt::Ssh {
                    id, required, file, ..
                },
                "target",
            ) => self
                .abs_path(&args[0], signature, "ssh socket target")
                .map(|t| Opt::Ssh {
                    id,
                    target: Some(t),
                    required,
                    file,
                }),
            (
                Opt::Ssh {
                    id, target, file, ..
                },
                "required",
            ) => self.bool_arg(&args[0], signature).map(|required| Opt::Ssh {
                id,
                target,
                required,
                file,
            }),
            (
                Opt::Ssh {
                    id,
                    target,
                    required,
                    file,
                },
                which @ ("mode" | "uid" | "gid"),
            ) => self
                .file_attr(which, &args[0], signature, file)
                .map(|file| Opt::Ssh {
                    id,
                    target,
                    required,
                    file,
                }),
            (Opt::Tmpfs { target, .. }, "size") => {
                self.int_arg(&args[0], signature).map(|(v, _)| Opt::Tmpfs {
                    target,
                    size: Some(v),
                })
            }
            (Opt::Bind { from, target, .. }, "rw") => Some(Opt::Bind {
                from,
                target,
                rw: true,
            }),
            _ => None,
        };
        out.map_or(Value::Poison, |o| Value::Opt(Box::new(o)))
    }

    /// The state a path value refers to, and the path inside it.
    fn path_source(
        &mut self,
        p: &PathRef,
        include: &[String],
        exclude: &[String],
        span: Span,
    ) -> (State, String) {
        match &p.from {
            PathFrom::Stage(img) => (img.state.clone(), p.path.clone()),
            PathFrom::Context => {
                let join = |g: &String| {
                    if p.path == "." {
                        g.clone()
                    } else {
                        format!("{}/{g}", p.path)
                    }
                };
                // Restrict the context to what is used, so the step's cache
                // key depends only on those files.
                let inc: Vec<String> = if !include.is_empty() {
                    include.iter().map(join).collect()
                } else if p.path == "." {
                    Vec::new()
                } else {
                    vec![p.path.clone()]
                };
                let exc: Vec<String> = exclude.iter().map(join).collect();
                let label = format!("context {}", p.path);
                let state = self.named(State::context("context", inc, exc), label, span);
                let src = if p.path == "." {
                    "/".to_string()
                } else {
                    format!("/{}", p.path)
                };
                (state, src)
            }
        }
    }

    fn image_method(
        &mut self,
        img: &Image,
        recv_span: Span,
        name: &str,
        signature: &str,
        span: Span,
        args: &[Arg],
    ) -> Value {
        let st = &img.state;
        let step = |this: &mut Self, state: State, label: String| -> Value {
            Value::Image(Box::new(Image {
                state: this.named(state, label, span),
                root: img.root,
                root_span: img.root_span,
            }))
        };
        let config = |state: State| -> Value {
            Value::Image(Box::new(Image {
                state,
                root: img.root,
                root_span: img.root_span,
            }))
        };
        match name {
            "path" => match self.abs_path(&args[0], signature, "stage path") {
                Some(path) => Value::Path(Box::new(PathRef {
                    from: PathFrom::Stage(Box::new(img.clone())),
                    path: kiln_dag::resolve_path("/", &path),
                })),
                None => Value::Poison,
            },
            "run" => {
                if let Root::NoShell(src) = img.root {
                    self.diags.push(
                        Diagnostic::error(
                            "kiln::run-without-shell",
                            span,
                            format!("`run` on an image built from `{src}`"),
                        )
                        .label("there is no shell or any program here")
                        .related(img.root_span, "the image starts here")
                        .help("build in a builder stage (e.g. `image(\"docker.io/library/debian:bookworm\")`), then copy the output here with `.copy(builder.path(\"/out\"), \"/dest\")`"),
                    );
                    return Value::Poison;
                }
                let (argv, label) = match &args[0].0 {
                    Value::Str(s) => {
                        if !self.no_nul(args[0].1, s, "command") {
                            return Value::Poison;
                        }
                        if s.trim().is_empty() {
                            self.err(
                                "kiln::bad-value",
                                args[0].1,
                                "empty command",
                                "nothing to run",
                                "give a shell command, e.g. `.run(\"make\")`",
                            );
                            return Value::Poison;
                        }
                        (
                            vec!["/bin/sh".to_string(), "-c".to_string(), s.clone()],
                            format!("run {}", quote(s)),
                        )
                    }
                    Value::Array(_) => {
                        let Some(argv) = self.strs_arg(&args[0], signature) else {
                            return Value::Poison;
                        };
                        if argv.is_empty() {
                            self.err("kiln::bad-value", args[0].1, "empty argv", "nothing to run", "give the program and its arguments, e.g. `.run([\"make\", \"all\"])`");
                            return Value::Poison;
                        }
                        let label = format!("run {}", quote(&argv.join(" ")));
                        (argv, label)
                    }
                    _ => {
                        self.type_error(&args[0], "a string or an array of strings", signature);
                        return Value::Poison;
                    }
                };
                let Some(opts) = self.opts_arg(
                    args.get(1),
                    "run",
                    &[
                        "cache", "secret", "ssh", "tmpfs", "bind", "network", "pids", "env",
                    ],
                    signature,
                ) else {
                    return Value::Poison;
                };
                let mut exec = Exec::argv(argv);
                for o in opts {
                    let m = match o {
                        Opt::Network(n) => {
                            exec = exec.network(n);
                            continue;
                        }
                        Opt::Pids(n) => {
                            exec = exec.pids_limit(n);
                            continue;
                        }
                        Opt::Cache {
                            target,
                            id,
                            sharing,
                        } => ExecMount::Cache {
                            id: id.unwrap_or_else(|| target.clone()),
                            target,
                            sharing,
                        },
                        Opt::Secret {
                            id,
                            target,
                            required,
                            env: Some(name),
                            ..
                        } if target.is_none() => ExecMount::SecretEnv { name, id, required },
                        Opt::Secret {
                            id,
                            target,
                            required,
                            file: (mode, uid, gid),
                            ..
                        } => ExecMount::Secret {
                            target: target.unwrap_or_else(|| format!("/run/secrets/{id}")),
                            id,
                            required,
                            mode,
                            uid,
                            gid,
                        },
                        Opt::Env(k, v) => {
                            exec = exec.env(k, v);
                            continue;
                        }
                        Opt::Tmpfs { target, size } => ExecMount::Tmpfs { target, size },
                        Opt::Ssh {
                            id,
                            target,
                            required,
                            file: (mode, uid, gid),
                        } => ExecMount::Ssh {
                            target,
                            id,
                            required,
                            mode,
                            uid,
                            gid,
                        },
                        Opt::Bind { from, target, rw } => {
                            let (state, selector) = self.path_source(&from, &[], &[], span);
                            ExecMount::Bind {
                                target,
                                from: state,
                                selector,
                                readonly: !rw,
                            }
                        }
                        _ => continue,
                    };
                    exec = exec.mount(m);
                }
                let opts = self.opts;
                step(self, st.run(exec.settings(&opts.run)), label)
            }
            "copy" => {
                let path = match &args[0].0 {
                    Value::Path(p) => (**p).clone(),
                    Value::Context => PathRef {
                        from: PathFrom::Context,
                        path: ".".into(),
                    },
                    Value::Poison => return Value::Poison,
                    Value::Image(_) => {
                        self.err(
                            "kiln::type",
                            args[0].1,
                            "expected a path, found an image",
                            "this is a whole image",
                            "copy a path of it: `stage.path(\"/dir\")`",
                        );
                        return Value::Poison;
                    }
                    Value::Str(s) => {
                        let help = format!(
                            "copy from the build context with `context().path({s:?})`, or from another stage with `stage.path(\"/abs/path\")`"
                        );
                        self.err(
                            "kiln::type",
                            args[0].1,
                            "expected a path, found a string",
                            "this is a string",
                            help,
                        );
                        return Value::Poison;
                    }
                    _ => {
                        self.type_error(&args[0], "a path", signature);
                        return Value::Poison;
                    }
                };
                let dest = self.nonempty(&args[1], signature, "destination");
                let opts = self.opts_arg(
                    args.get(2),
                    "copy",
                    &[
                        "chown",
                        "chmod",
                        "include",
                        "exclude",
                        "allow_dynamic",
                        "unpack",
                        "keep_owner",
                        "follow_symlinks",
                    ],
                    signature,
                );
                let (Some(dest), Some(opts)) = (dest, opts) else {
                    return Value::Poison;
                };
                let mut co = CopyOptions::default();
                for o in opts {
                    match o {
                        Opt::Chown(c) => co.chown = Some(c),
                        Opt::Chmod(m) => co.chmod = Some(m),
                        Opt::ChmodSymbolic(m) => co.chmod_symbolic = Some(m),
                        Opt::Include(g) => co.include.push(g),
                        Opt::Exclude(g) => co.exclude.push(g),
                        Opt::AllowDynamic => co.allow_dynamic = true,
                        Opt::Unpack => co.unpack = true,
                        Opt::KeepOwner => co.keep_owner = true,
                        Opt::FollowSymlinks => co.follow_symlinks = true,
                        _ => {}
                    }
                }
                let (from, src) = self.path_source(&path, &co.include, &co.exclude, args[0].1);
                let origin = match &path.from {
                    PathFrom::Context => "context".to_string(),
                    PathFrom::Stage(_) => {
                        // The source binding's name is the head of the path
                        // expression; use the text for a readable label.
                        let text = self.src.get(args[0].1.range()).unwrap_or("");
                        text.split('.').next().unwrap_or("stage").trim().to_string()
                    }
                };
                let label = format!("copy {origin}:{src} -> {dest}");
                step(self, st.copy(&from, &src, &dest, co), label)
            }
            "mkdir" | "file" => {
                let path = self.nonempty(&args[0], signature, "path");
                let content = if name == "file" {
                    self.str_arg(&args[1], signature)
                } else {
                    Some(String::new())
                };
                let opt_arg = args.get(if name == "file" { 2 } else { 1 });
                let opts = self.opts_arg(opt_arg, name, &["mode", "chown"], signature);
                let (Some(path), Some(content), Some(opts)) = (path, content, opts) else {
                    return Value::Poison;
                };
                let mut mode = if name == "file" { 0o644 } else { 0o755 };
                let mut chown = None;
                for o in opts {
                    match o {
                        Opt::Mode(m) => mode = m,
                        Opt::Chown(c) => chown = Some(c),
                        _ => {}
                    }
                }
                if name == "file" {
                    let s = st.mkfile(&path, content.as_bytes(), mode, chown);
                    step(self, s, format!("file {path}"))
                } else {
                    let s = st.mkdir(&path, mode, true, chown);
                    step(self, s, format!("mkdir {path}"))
                }
            }
            "packages" => {
                let d = match &args[0].0 {
                    Value::Debian(d) => (**d).clone(),
                    Value::Poison => return Value::Poison,
                    _ => {
                        self.type_error(&args[0], "a Debian package set", signature);
                        return Value::Poison;
                    }
                };
                if d.packages.is_empty() {
                    self.err(
                        "kiln::bad-value",
                        args[0].1,
                        "a package set without packages",
                        "no packages named",
                        "name them with `.packages([..])`, e.g. `debian(\"bookworm\").packages([\"python3\"])`",
                    );
                    return Value::Poison;
                }
                let label = format!("packages {} {}", d.suite, d.packages.join(" "));
                let set = self.named(State::debian_packages(d), label.clone(), args[0].1);
                step(self, State::merge(&[st.clone(), set]), label)
            }
            "symlink" => {
                let target = self.nonempty(&args[0], signature, "symlink target");
                let link = self.nonempty(&args[1], signature, "link path");
                let (Some(target), Some(link)) = (target, link) else {
                    return Value::Poison;
                };
                let s = st.symlink(&target, &link);
                step(self, s, format!("symlink {link} -> {target}"))
            }
            "rm" => {
                let Some(path) = self.nonempty(&args[0], signature, "path") else {
                    return Value::Poison;
                };
                if kiln_dag::resolve_path(st.cwd(), &path) == "/" {
                    self.err(
                        "kiln::bad-value",
                        args[0].1,
                        "`rm` of the root directory",
                        "removes everything",
                        "remove a file or directory below `/`",
                    );
                    return Value::Poison;
                }
                let s = st.rm(&path, false);
                step(self, s, format!("rm {path}"))
            }
            "env" | "label" => {
                let (key, value) = if name == "env" {
                    ("environment variable name", "environment variable value")
                } else {
                    ("label key", "label value")
                };
                let k = self.nonempty(&args[0], signature, key);
                let v = self
                    .str_arg(&args[1], signature)
                    .filter(|v| self.no_nul(args[1].1, v, value));
                let (Some(k), Some(v)) = (k, v) else {
                    return Value::Poison;
                };
                if name == "env" {
                    if k.contains('=') || k.chars().any(char::is_whitespace) {
                        self.err(
                            "kiln::bad-value",
                            args[0].1,
                            format!("invalid environment variable name `{k}`"),
                            "not a variable name",
                            "names cannot contain `=` or whitespace; give the name and value separately: `.env(\"KEY\", \"value\")`",
                        );
                        return Value::Poison;
                    }
                    config(st.env(k, v))
                } else {
                    config(st.label(k, v))
                }
            }
            "healthcheck" | "no_healthcheck" => {
                let test = if name == "no_healthcheck" {
                    vec!["NONE".to_string()]
                } else {
                    match &args[0].0 {
                        Value::Str(s) if !s.trim().is_empty() => {
                            vec!["CMD-SHELL".to_string(), s.clone()]
                        }
                        Value::Array(_) => match self.strs_arg(&args[0], signature) {
                            Some(argv) if !argv.is_empty() => {
                                std::iter::once("CMD".to_string()).chain(argv).collect()
                            }
                            Some(_) => {
                                self.err("kiln::bad-value", args[0].1, "empty argv", "nothing to run", "give the program and its arguments, e.g. `.healthcheck([\"/app\", \"--health\"])`");
                                return Value::Poison;
                            }
                            None => return Value::Poison,
                        },
                        Value::Str(_) => {
                            self.err("kiln::bad-value", args[0].1, "empty command", "nothing to run", "give a shell command, e.g. `.healthcheck(\"curl -f http://localhost/\")`");
                            return Value::Poison;
                        }
                        Value::Poison => return Value::Poison,
                        _ => {
                            self.type_error(&args[0], "a string or an array of strings", signature);
                            return Value::Poison;
                        }
                    }
                };
                let allowed = [
                    "interval",
                    "timeout",
                    "start_period",
                    "start_interval",
                    "retries",
                ];
                let Some(opts) = self.opts_arg(args.get(1), "healthcheck", &allowed, signature)
                else {
                    return Value::Poison;
                };
                let mut hc = kiln_dag::Healthcheck {
                    test,
                    ..Default::default()
                };
                for o in opts {
                    if let Opt::Health(what, n) = o {
                        match what {
                            "interval" => hc.interval = Some(n),
                            "timeout" => hc.timeout = Some(n),
                            "start_period" => hc.start_period = Some(n),
                            "start_interval" => hc.start_interval = Some(n),
                            _ => hc.retries = u32::try_from(n).ok(),
                        }
                    }
                }
                config(st.healthcheck(hc))
            }
            "onbuild" => match self.nonempty(&args[0], signature, "trigger") {
                Some(t) if self.no_nul(args[0].1, &t, "trigger") => config(st.onbuild(t)),
                _ => Value::Poison,
            },
            "volume" => match self.nonempty(&args[0], signature, "volume path") {
                Some(p) if self.no_nul(args[0].1, &p, "volume path") => config(st.volume(p)),
                _ => Value::Poison,
            },
            "stop_signal" => match self.nonempty(&args[0], signature, "signal") {
                Some(sig) if self.no_nul(args[0].1, &sig, "signal") => config(st.stop_signal(sig)),
                _ => Value::Poison,
            },
            "workdir" => match self.nonempty(&args[0], signature, "directory") {
                Some(p) => config(st.workdir(&p)),
                None => Value::Poison,
            },
            "user" => {
                let owner = self
                    .nonempty(&args[0], signature, "user")
                    .and_then(|u| self.owner(args[0].1, &u, "user").map(|_| u));
                match owner {
                    Some(u) => config(st.user(u)),
                    None => Value::Poison,
                }
            }
            "entrypoint" | "cmd" => {
                if let Value::Str(s) = &args[0].0 {
                    self.err(
                        "kiln::type",
                        args[0].1,
                        "expected an array of strings, found a string",
                        "this is a string",
                        format!("give the argv as an array: `.{name}([{s:?}])`, or `[\"/bin/sh\", \"-c\", {s:?}]` for a shell"),
                    );
                    return Value::Poison;
                }
                let at = self.location(args[0].1);
                match self.strs_arg(&args[0], signature) {
                    Some(argv) if name == "cmd" => config(st.cmd(argv).command_at(true, at)),
                    Some(argv) => config(st.entrypoint(argv).command_at(false, at)),
                    None => Value::Poison,
                }
            }
            "expose" => {
                let port = match &args[0].0 {
                    Value::Int { value, .. } if (1..=65535).contains(value) => {
                        Some(value.to_string())
                    }
                    Value::Str(s) => {
                        let (p, proto) = s.split_once('/').unwrap_or((s, "tcp"));
                        let port = |n: &str| n.parse::<u16>().is_ok_and(|n| n > 0);
                        // A range `8000-8010` as docker's `EXPOSE` takes it.
                        let ports = match p.split_once('-') {
                            Some((a, b)) => {
                                port(a) && port(b) && a.parse::<u16>().ok() <= b.parse().ok()
                            }
                            None => port(p),
                        };
                        let ok = ports && matches!(proto, "tcp" | "udp" | "sctp");
                        ok.then(|| s.clone())
                    }
                    Value::Poison => return Value::Poison,
                    Value::Int { .. } => None,
                    _ => {
                        self.type_error(&args[0], "a port number or \"port/proto\"", signature);
                        return Value::Poison;
                    }
                };
                match port {
                    Some(p) => {
                        // A range is every port in it, as BuildKit lists them.
                        let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                        let range = num.split_once('-').and_then(|(a, b)| {
                            Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?))
                        });
                        match range {
                            Some((a, b)) => {
                                let mut s = st.clone();
                                for n in a..=b {
                                    s = s.expose(&format!("{n}/{proto}"));
                                }
                                config(s)
                            }
                            None => config(st.expose(&p)),
                        }
                    }
                    None => {
                        self.err(
                            "kiln::bad-value",
                            args[0].1,
                            "invalid port",
                            "not a port",
                            "write a port from 1 to 65535, optionally with a protocol: `8080`, \"53/udp\" (tcp, udp, sctp) or a range \"8000-8010\"",
                        );
                        Value::Poison
                    }
                }
            }
            _ => {
                let _ = recv_span;
                Value::Poison
            }
        }
    }
}

/// Go's `time.ParseDuration` forms, as BuildKit reads `HEALTHCHECK`
/// flags (the same arithmetic as the Dockerfile frontend, so both give the
/// same nanoseconds; the Dockerfile frontend uses this one).
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * unit;
    }
    (total.is_finite() && total < u64::MAX as f64).then_some(total as u64)
}

/// A short quoted label for progress output.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("\"{cut}...\"")
    } else {
        format!("\"{one_line}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggestions_allow_typos_and_swaps_but_not_guesses() {
        let methods = ["run", "copy", "workdir", "entrypoint"];
        assert_eq!(did_you_mean("rnu", methods), Some("run"));
        assert_eq!(did_you_mean("cpy", methods), Some("copy"));
        assert_eq!(did_you_mean("workdri", methods), Some("workdir"));
        assert_eq!(did_you_mean("entrypiont", methods), Some("entrypoint"));
        assert_eq!(did_you_mean("xyz", methods), None);
    }
}
