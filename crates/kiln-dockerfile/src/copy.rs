//! `COPY` and `ADD`: sources from the context, a stage or an image;
//! heredocs; `--chown`, `--chmod`, `--exclude`, `--link`.

use std::ops::Range;

use kiln_dag::{Chown, CopyOptions, State};
use parse_dockerfile as pd;

use crate::lower::{Lowerer, StageCx};
use crate::{shell, text};

struct Flags {
    from: Option<State>,
    chown: Option<Chown>,
    chmod: Option<u32>,
    /// `--chmod=u+x,g-w`, applied to each entry's own mode
    chmod_symbolic: Option<String>,
    exclude: Vec<String>,
    /// `ADD` extracts a source file that is a tar archive (told by content
    /// in the worker, as BuildKit does) unless `--unpack=false`.
    unpack: bool,
    /// `--parents`: the source's directories (below a `/./` pivot) are
    /// kept under the destination
    parents: bool,
}

impl Lowerer<'_> {
    pub(crate) fn copy(&mut self, cx: &mut StageCx, c: &pd::CopyInstruction<'_>) {
        self.copy_like(cx, "COPY", &c.copy.span, &c.options, &c.src, &c.dest);
    }

    pub(crate) fn add(&mut self, cx: &mut StageCx, a: &pd::AddInstruction<'_>) {
        self.copy_like(cx, "ADD", &a.add.span, &a.options, &a.src, &a.dest);
    }

    fn copy_like(
        &mut self,
        cx: &mut StageCx,
        what: &str,
        keyword: &Range<usize>,
        options: &[pd::Flag<'_>],
        srcs: &[pd::Source<'_>],
        dest: &pd::UnescapedString<'_>,
    ) {
        let vars = &cx.vars;
        let Some(flags) = self.copy_flags(cx, what, options, vars) else {
            return;
        };
        let Some(mut dest_path) = self.expand(&dest.value, vars, &dest.span) else {
            return;
        };
        if dest_path.is_empty() {
            self.error(
                "dockerfile::copy",
                &dest.span,
                format!("`{what}` has an empty destination"),
                "write a path, e.g. `/app/` or `.`",
            );
            return;
        }
        if dest_path == "." || dest_path.ends_with("/.") {
            dest_path.push('/');
        }
        let into_dir = dest_path.ends_with('/');
        if srcs.len() > 1 && !into_dir {
            self.error(
                "dockerfile::copy",
                &dest.span,
                format!(
                    "`{what}` with more than one source needs a directory destination ending in `/`"
                ),
                format!("write `{dest_path}/`"),
            );
            return;
        }
        // heredoc names come from the instruction's line
        let line_end = self
            .src
            .get(keyword.start..)
            .unwrap_or("")
            .find('\n')
            .map_or(self.src.len(), |i| keyword.start + i);
        let markers = text::heredoc_markers(self.src.get(keyword.start..line_end).unwrap_or(""));
        let mut heredoc_index = 0;
        let summary_end = srcs
            .iter()
            .find_map(|s| match s {
                pd::Source::HereDoc(h) => Some(h.span.start),
                _ => None,
            })
            .unwrap_or(line_end.max(dest.span.end));
        let summary = self.summary(keyword.start, summary_end);
        let meta = self.step_meta(cx, keyword.start, &summary);
        let mut state = cx.state.clone();
        for src in srcs {
            match src {
                pd::Source::HereDoc(h) => {
                    let Some(m) = markers.get(heredoc_index).cloned() else {
                        self.error(
                            "dockerfile::heredoc",
                            keyword,
                            "the heredoc markers of this instruction could not be matched with their bodies",
                            "put every `<<NAME` on the instruction's line",
                        );
                        return;
                    };
                    heredoc_index += 1;
                    let mut data = h.value.to_string();
                    if m.chomp {
                        data = text::chomp(&data);
                    }
                    if h.expand {
                        data = shell::expand_raw(&data, vars, self.escape);
                    }
                    let path = if into_dir {
                        format!("{dest_path}{}", m.name)
                    } else {
                        dest_path.clone()
                    };
                    let mode = match (&flags.chmod, &flags.chmod_symbolic) {
                        (Some(m), _) => *m,
                        (None, Some(s)) => kiln_dag::SymbolicMode::parse(s)
                            .map_or(0o644, |m| m.apply(0o644, false)),
                        (None, None) => 0o644,
                    };
                    state = state
                        .mkfile(&path, data.as_bytes(), mode, flags.chown.clone())
                        .into_meta(meta.clone());
                }
                pd::Source::Path(p) => {
                    let Some(path) = self.expand(&p.value, vars, &p.span) else {
                        return;
                    };
                    if !self.source_allowed(what, &path, &p.span) {
                        return;
                    }
                    let (dir, pattern) = split_source(&path, flags.parents);
                    let dest_for = if pattern.is_some() && !into_dir {
                        format!("{dest_path}/")
                    } else {
                        dest_path.clone()
                    };
                    // BuildKit's copy keeps a stage's or an image's
                    // owners unless `--chown`, and follows a symlink named
                    // as the source (the context's files are root's).
                    let from_stage = flags.from.is_some();
                    let opts = CopyOptions {
                        chown: flags.chown.clone(),
                        chmod: flags.chmod,
                        include: pattern.iter().cloned().collect(),
                        exclude: flags.exclude.clone(),
                        allow_dynamic: false,
                        unpack: flags.unpack,
                        keep_owner: from_stage && flags.chown.is_none(),
                        follow_symlinks: from_stage,
                        chmod_symbolic: flags.chmod_symbolic.clone(),
                    };
                    let from = match &flags.from {
                        Some(st) => st.clone(),
                        None => {
                            // Restrict the context to what is used, so the
                            // step's key depends only on those files.
                            let rel = dir.trim_start_matches('/').to_string();
                            let join = |g: &String| {
                                if rel.is_empty() {
                                    g.clone()
                                } else {
                                    format!("{rel}/{g}")
                                }
                            };
                            let include: Vec<String> = match &pattern {
                                Some(pat) => vec![join(pat)],
                                None if rel.is_empty() => Vec::new(),
                                None => vec![rel.clone()],
                            };
                            let exclude = flags.exclude.iter().map(join).collect();
                            let label = if path.is_empty() {
                                ".".to_string()
                            } else {
                                path.clone()
                            };
                            State::context("context", include, exclude).with_meta(kiln_dag::Meta {
                                name: Some(format!("[context] {label}")),
                                location: None,
                            })
                        }
                    };
                    state = state
                        .copy(&from, &dir, &dest_for, opts)
                        .into_meta(meta.clone());
                }
                _ => {
                    self.error(
                        "dockerfile::unsupported",
                        keyword,
                        format!("a `{what}` source kiln does not know"),
                        "write a path or a heredoc",
                    );
                    return;
                }
            }
        }
        cx.state = state;
    }

    fn copy_flags(
        &mut self,
        cx: &StageCx,
        what: &str,
        options: &[pd::Flag<'_>],
        vars: &shell::Vars,
    ) -> Option<Flags> {
        let mut f = Flags {
            from: None,
            chown: None,
            chmod: None,
            chmod_symbolic: None,
            exclude: Vec::new(),
            unpack: what == "ADD",
            parents: false,
        };
        let mut ok = true;
        for flag in options {
            let span = flag.span();
            let raw = flag.value.as_ref().map_or("", |v| &v.value);
            let name = &*flag.name.value;
            let value = match name {
                "link" => None,
                _ => match self.expand(raw, vars, &span) {
                    Some(v) => Some(v),
                    None => {
                        ok = false;
                        continue;
                    }
                },
            };
            let value = value.unwrap_or_default();
            match name {
                "from" => match self.stage_or_image(cx, &value, &span) {
                    Some(st) => f.from = Some(st),
                    None => ok = false,
                },
                "chown" => {
                    let (user, group) = match value.split_once(':') {
                        Some((u, g)) => (u.to_string(), Some(g.to_string())),
                        None => (value.clone(), None),
                    };
                    if user.is_empty() {
                        self.error(
                            "dockerfile::chown",
                            &span,
                            format!("invalid `--chown={value}`"),
                            "write `--chown=USER[:GROUP]` with names or numbers",
                        );
                        ok = false;
                    } else {
                        f.chown = Some(Chown { user, group });
                    }
                }
                "chmod" => match u32::from_str_radix(&value, 8) {
                    Ok(m) if m <= 0o7777 => f.chmod = Some(m),
                    // BuildKit takes what is not octal as a symbolic mode
                    _ if value.starts_with(|c: char| c.is_ascii_digit()) => {
                        self.error(
                            "dockerfile::chmod",
                            &span,
                            format!("invalid `--chmod={value}`"),
                            "write an octal mode such as `--chmod=0755`",
                        );
                        ok = false;
                    }
                    // BuildKit takes what is not octal as a symbolic mode
                    _ => match kiln_dag::SymbolicMode::parse(&value) {
                        Ok(_) => f.chmod_symbolic = Some(value),
                        Err(e) => {
                            self.error(
                                "dockerfile::chmod",
                                &span,
                                format!("invalid symbolic `--chmod={value}`: {}", e.reason),
                                "write clauses of who (`ugoa`), `+`, `-` or `=` and permissions (`rwxXst`), e.g. `--chmod=u+x,g-w`, or an octal mode",
                            );
                            ok = false;
                        }
                    },
                },
                "exclude" => {
                    if value.is_empty() {
                        self.error(
                            "dockerfile::exclude",
                            &span,
                            "`--exclude` needs a pattern",
                            "write e.g. `--exclude=*.md`",
                        );
                        ok = false;
                    } else {
                        f.exclude.push(value);
                    }
                }
                // The files are the same with or without `--link`; only
                // BuildKit's layer reuse across bases differs.
                "link" => {}
                "parents" => match self.bool_flag(name, &value, &span) {
                    Some(b) => f.parents = b,
                    None => ok = false,
                },
                "unpack" if what == "ADD" => match self.bool_flag(name, &value, &span) {
                    Some(b) => f.unpack = b,
                    None => ok = false,
                },
                "checksum" | "keep-git-dir" if what == "ADD" => {
                    self.error(
                        "dockerfile::unsupported",
                        &span,
                        format!("`ADD --{name}` is not supported by kiln yet"),
                        "download and verify in a builder stage, then `COPY --from` the result",
                    );
                    ok = false;
                }
                other => {
                    self.error(
                        "dockerfile::flag",
                        &span,
                        format!("unknown flag `--{other}` for `{what}`"),
                        format!(
                            "`{what}` takes `--from`, `--chown`, `--chmod`, `--exclude` and `--link`"
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(f)
    }

    /// A boolean flag's value: none or `true`, or `false`.
    fn bool_flag(&mut self, name: &str, value: &str, span: &Range<usize>) -> Option<bool> {
        match value {
            "" | "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.error(
                    "dockerfile::flag",
                    span,
                    format!("invalid `--{name}={value}`"),
                    format!("write `--{name}=true` or `--{name}=false`"),
                );
                None
            }
        }
    }

    /// Sources kiln cannot take yet, as located errors.
    fn source_allowed(&mut self, what: &str, path: &str, span: &Range<usize>) -> bool {
        let lower = path.to_ascii_lowercase();
        let url = ["http://", "https://", "git@", "git://", "ssh://"]
            .iter()
            .any(|p| lower.starts_with(p));
        if url {
            let (m, h) = if what == "ADD" {
                (
                    format!("`ADD` of the URL `{path}` is not supported by kiln yet"),
                    "download it in a builder stage (`RUN curl -fsSLO ... && sha256sum -c`) and `COPY --from` the file",
                )
            } else {
                (
                    format!("`COPY` cannot take the URL `{path}`"),
                    "`COPY` copies from the context or a stage; download in a builder stage",
                )
            };
            self.error("dockerfile::unsupported", span, m, h);
            return false;
        }
        true
    }
}

/// Where a copy reads and what it selects there: [`split_wildcard`], or
/// with `--parents` the directory before a `/./` pivot (else the root) and
/// the rest as the pattern, so the rest's directories are copied too, as
/// BuildKit's `--parents` copies them.
pub(crate) fn split_source(path: &str, parents: bool) -> (String, Option<String>) {
    if !parents {
        return split_wildcard(path);
    }
    let (root, rest) = match path.find("/./") {
        Some(i) => (&path[..i], &path[i + 3..]),
        None => ("/", path),
    };
    let root = kiln_dag::resolve_path("/", root);
    let root = if root.len() > 1 {
        root.trim_end_matches('/').to_string()
    } else {
        root
    };
    let rest = kiln_dag::resolve_path("/", rest);
    let rest = rest.trim_matches('/');
    if rest.is_empty() {
        return (root, None);
    }
    (root, Some(rest.to_string()))
}

/// `dir/*.go` -> (`/dir`, Some(`*.go`)); a path without wildcards ->
/// (`/path`, None). Wildcards in a directory part keep the rest as the
/// pattern below the last plain directory.
pub(crate) fn split_wildcard(path: &str) -> (String, Option<String>) {
    let norm = kiln_dag::resolve_path("/", path);
    let norm = if norm.len() > 1 {
        norm.trim_end_matches('/').to_string()
    } else {
        norm
    };
    let parts: Vec<&str> = norm.split('/').filter(|s| !s.is_empty()).collect();
    match parts.iter().position(|p| p.contains(['*', '?', '['])) {
        None => (norm, None),
        Some(i) => (
            format!("/{}", parts[..i].join("/")),
            Some(parts[i..].join("/")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::split_wildcard;

    #[test]
    fn parents() {
        use super::split_source;
        assert_eq!(
            split_source("a/b/c.txt", true),
            ("/".into(), Some("a/b/c.txt".into()))
        );
        assert_eq!(
            split_source("./x/./y/*.go", true),
            ("/x".into(), Some("y/*.go".into()))
        );
        assert_eq!(split_source("x/./", true), ("/x".into(), None));
        assert_eq!(split_source("a/b", false), ("/a/b".into(), None));
    }

    #[test]
    fn wildcards() {
        assert_eq!(split_wildcard("."), ("/".into(), None));
        assert_eq!(split_wildcard("./a/b/"), ("/a/b".into(), None));
        assert_eq!(split_wildcard("*.go"), ("/".into(), Some("*.go".into())));
        assert_eq!(
            split_wildcard("src/*/x.go"),
            ("/src".into(), Some("*/x.go".into()))
        );
        assert_eq!(split_wildcard("../../etc"), ("/etc".into(), None));
    }
}
