//! `--call outline` of a Dockerfile: every `ARG` with its default and the
//! `#` comment above it (as BuildKit's outline describes a build arg), the
//! target stage with the comment above its `FROM`, and the secrets, SSH
//! agents and cache mounts the target's steps use, in the model the
//! Kilnfile's outline has (`kiln_frontend::outline`).

use kiln_frontend::Options;
use kiln_frontend::outline::{Arg, Outline, doc_comment};
use kiln_frontend::span::Span;
use parse_dockerfile as pd;

use crate::BaseImages;

/// The outline of `src`; a Dockerfile that does not lower still lists its
/// build args. Unlike BuildKit, which lists the args the target reads,
/// every declared `ARG` is listed.
pub fn outline(file_name: &str, src: &str, opts: &Options, bases: &dyn BaseImages) -> Outline {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut o = Outline::default();
    let Ok(parsed) = pd::parse(src) else {
        return o;
    };
    let escape = parsed
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |e| e.value.value);
    let mut froms = Vec::new();
    for ins in &parsed.instructions {
        match ins {
            pd::Instruction::Arg(a) => {
                let words =
                    crate::shell::split_words(&a.arguments.value, escape).unwrap_or_default();
                for w in words {
                    let (name, value) = match w.split_once('=') {
                        Some((n, v)) => (n.to_string(), Some(v.to_string())),
                        None => (w, None),
                    };
                    if name.is_empty() || o.args.iter().any(|x| x.name == name) {
                        continue;
                    }
                    let d = doc_comment(src, a.arg.span.start, "#");
                    o.args.push(Arg {
                        name,
                        value,
                        description: (!d.is_empty()).then_some(d),
                        span: Some(Span::new(a.arg.span.start, a.arguments.span.end)),
                    });
                }
            }
            pd::Instruction::From(f) => {
                let name = f.as_.as_ref().map_or_else(
                    || format!("stage-{}", froms.len()),
                    |(_, n)| n.value.to_ascii_lowercase(),
                );
                froms.push((name, f.from.span.start));
            }
            _ => {}
        }
    }
    if let Ok(c) = crate::compile(file_name, src, opts, bases) {
        if let Some((_, at)) = froms.iter().find(|(n, _)| *n == c.target) {
            let d = doc_comment(src, *at, "#");
            o.description = (!d.is_empty()).then_some(d);
        }
        o.name = Some(c.target);
        o.add_uses(&c.definition);
    }
    o
}
