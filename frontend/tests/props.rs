//! Property tests of the digest contract and of robustness:
//! - the same build written with other whitespace, comments, line breaks,
//!   string spellings and binding names has the same digests;
//! - any change of meaning (a command, a path, an env value, a mount option,
//!   a mode) changes the target's digest;
//! - the parser and checker never panic, on random bytes or random tokens.

use kiln_frontend::{Options, compile};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Root {
    Image(String),
    Static,
    Scratch,
}

#[derive(Debug, Clone)]
enum Mount {
    Cache(String, usize),
    Tmpfs(String, Option<u64>),
    Secret(String),
    Network(bool),
}

#[derive(Debug, Clone)]
enum Src {
    Context(String),
    /// Index of an earlier stage and an absolute path in it.
    Stage(usize, String),
}

#[derive(Debug, Clone)]
enum Step {
    Run(String, Vec<Mount>),
    RunArgv(Vec<String>),
    Env(String, String),
    Workdir(String),
    User(String),
    Copy(Src, String),
    Mkdir(String, u32),
    File(String, String),
}

#[derive(Debug, Clone)]
struct Stage {
    base: Root,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
struct Prog {
    stages: Vec<Stage>,
}

const SHARING: [&str; 3] = ["shared", "private", "locked"];

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,6}"
}

fn text() -> impl Strategy<Value = String> {
    // Includes characters that need escapes in a normal string literal.
    "[a-zA-Z0-9 ./_\"\\\\-]{1,16}"
}

fn abs_path() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..4).prop_map(|p| format!("/{}", p.join("/")))
}

fn rel_path() -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..3).prop_map(|p| p.join("/"))
}

fn mount() -> impl Strategy<Value = Mount> {
    prop_oneof![
        (abs_path(), 0..3usize).prop_map(|(t, s)| Mount::Cache(t, s)),
        (abs_path(), prop::option::of(1u64..1 << 30)).prop_map(|(t, s)| Mount::Tmpfs(t, s)),
        word().prop_map(Mount::Secret),
        any::<bool>().prop_map(Mount::Network),
    ]
}

fn step(shell: bool, earlier: usize) -> BoxedStrategy<Step> {
    let src = if earlier > 0 {
        prop_oneof![
            rel_path().prop_map(Src::Context),
            (0..earlier, abs_path()).prop_map(|(i, p)| Src::Stage(i, p)),
        ]
        .boxed()
    } else {
        rel_path().prop_map(Src::Context).boxed()
    };
    let common = prop_oneof![
        ("[A-Z][A-Z0-9_]{0,6}", text()).prop_map(|(k, v)| Step::Env(k, v)),
        abs_path().prop_map(Step::Workdir),
        "[a-z0-9]{1,6}".prop_map(Step::User),
        (src, abs_path()).prop_map(|(s, d)| Step::Copy(s, d)),
        (abs_path(), 0u32..0o7777).prop_map(|(p, m)| Step::Mkdir(p, m)),
        (abs_path(), text()).prop_map(|(p, c)| Step::File(p, c)),
    ];
    if shell {
        prop_oneof![
            2 => ("[a-z][a-zA-Z0-9 ./_\"\\\\-]{0,15}", prop::collection::vec(mount(), 0..3)).prop_map(|(c, m)| Step::Run(c, m)),
            1 => prop::collection::vec(text(), 1..4).prop_map(Step::RunArgv),
            3 => common,
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

fn stage(earlier: usize) -> BoxedStrategy<Stage> {
    prop_oneof![
        prop::sample::select(vec![
            "docker.io/library/debian:bookworm",
            "docker.io/library/alpine:3.20",
            "ghcr.io/example/builder:1",
        ])
        .prop_map(|r| Root::Image(r.to_string())),
        Just(Root::Static),
        Just(Root::Scratch),
    ]
    .prop_flat_map(move |base| {
        let shell = matches!(base, Root::Image(_));
        prop::collection::vec(step(shell, earlier), 1..6).prop_map(move |steps| Stage {
            base: base.clone(),
            steps,
        })
    })
    .boxed()
}

fn prog() -> impl Strategy<Value = Prog> {
    (1..4usize).prop_flat_map(|n| {
        let stages: Vec<BoxedStrategy<Stage>> = (0..n).map(stage).collect();
        stages.prop_map(|stages| Prog { stages })
    })
}

/// How a program is spelled: none of this may change a digest.
#[derive(Debug, Clone)]
struct Style {
    /// Between chained calls: "", "\n    ", " /* c */ \n\t".
    chain_sep: &'static str,
    comma: &'static str,
    trailing_comma: bool,
    comments: bool,
    raw_strings: bool,
    names: Vec<String>,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop::sample::select(vec![
            "",
            "\n    ",
            " /* a /* nested */ comment */\n\t",
            "\n// line\n  ",
        ]),
        prop::sample::select(vec![",", ", ", " ,\n      "]),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec("[a-z][a-z0-9]{0,5}", 3),
    )
        .prop_map(
            |(chain_sep, comma, trailing_comma, comments, raw_strings, names)| Style {
                chain_sep,
                comma,
                trailing_comma,
                comments,
                raw_strings,
                // Distinct names, never Kilnfile functions.
                names: names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| format!("s{i}_{n}"))
                    .collect(),
            },
        )
}

fn lit(s: &str, st: &Style) -> String {
    if st.raw_strings && !s.contains("\"#") {
        format!("r#\"{s}\"#")
    } else {
        format!("{s:?}")
    }
}

fn list(items: Vec<String>, st: &Style) -> String {
    let mut out = format!("[{}", items.join(st.comma));
    if st.trailing_comma && !items.is_empty() {
        out.push(',');
    }
    out.push(']');
    out
}

fn render(p: &Prog, st: &Style) -> String {
    let mut out = String::new();
    if st.comments {
        out.push_str("// generated\n/* header */\n");
    }
    for (i, stage) in p.stages.iter().enumerate() {
        let name = &st.names[i];
        out.push_str(&format!("let {name} = "));
        out.push_str(&match &stage.base {
            Root::Image(r) => format!("image({})", lit(r, st)),
            Root::Static => "static_base()".into(),
            Root::Scratch => "scratch( )".into(),
        });
        for s in &stage.steps {
            out.push_str(st.chain_sep);
            let call = match s {
                Step::Run(c, mounts) => {
                    let ms: Vec<String> = mounts
                        .iter()
                        .map(|m| match m {
                            Mount::Cache(t, s) => {
                                format!("cache({}).sharing({})", lit(t, st), lit(SHARING[*s], st))
                            }
                            Mount::Tmpfs(t, Some(sz)) => {
                                format!("tmpfs({}).size({sz})", lit(t, st))
                            }
                            Mount::Tmpfs(t, None) => format!("tmpfs({})", lit(t, st)),
                            Mount::Secret(id) => format!("secret({})", lit(id, st)),
                            Mount::Network(h) => {
                                format!("network({})", lit(if *h { "host" } else { "none" }, st))
                            }
                        })
                        .collect();
                    if ms.is_empty() {
                        format!(".run({})", lit(c, st))
                    } else {
                        format!(".run({}{}{})", lit(c, st), st.comma, list(ms, st))
                    }
                }
                Step::RunArgv(a) => {
                    format!(".run({})", list(a.iter().map(|x| lit(x, st)).collect(), st))
                }
                Step::Env(k, v) => format!(".env({}{}{})", lit(k, st), st.comma, lit(v, st)),
                Step::Workdir(w) => format!(".workdir({})", lit(w, st)),
                Step::User(u) => format!(".user({})", lit(u, st)),
                Step::Copy(src, d) => {
                    let s = match src {
                        Src::Context(p) => format!("context().path({})", lit(p, st)),
                        Src::Stage(j, p) => format!("{}.path({})", st.names[*j], lit(p, st)),
                    };
                    format!(".copy({s}{}{})", st.comma, lit(d, st))
                }
                Step::Mkdir(p, m) => {
                    format!(".mkdir({}{}[mode(0o{m:o})])", lit(p, st), st.comma)
                }
                Step::File(p, c) => format!(".file({}{}{})", lit(p, st), st.comma, lit(c, st)),
            };
            out.push_str(&call);
        }
        out.push_str(";\n");
        if st.comments {
            out.push_str("/* between */ // stages\n");
        }
    }
    out
}

fn digests(src: &str) -> (String, String) {
    match compile("Kilnfile", src, &Options::default()) {
        Ok(c) => (
            c.definition.digest().to_string(),
            c.definition.root.to_string(),
        ),
        Err(d) => panic!(
            "generated program does not compile:\n{src}\n{}",
            d.render_plain()
        ),
    }
}

/// Whether a later step overrides the configuration `step` sets, so that
/// changing it would not change the image.
fn shadowed(step: &Step, later: &[Step]) -> bool {
    later.iter().any(|l| match (step, l) {
        (Step::Workdir(_), Step::Workdir(_)) | (Step::User(_), Step::User(_)) => true,
        (Step::Env(k, _), Step::Env(k2, _)) => k == k2,
        _ => false,
    })
}

/// A change of meaning in the last stage (the default target).
fn mutate(p: &Prog, which: usize) -> Prog {
    let mut p = p.clone();
    let last = p.stages.last_mut().unwrap();
    let n = last.steps.len();
    let mut i = which % n;
    if shadowed(&last.steps[i], &last.steps[i + 1..]) {
        i = n - 1;
    }
    let step = &mut last.steps[i];
    match step {
        Step::Run(c, mounts) => {
            let later_network = mounts
                .iter()
                .skip(1)
                .any(|m| matches!(m, Mount::Network(_)));
            match mounts.first_mut() {
                Some(Mount::Cache(_, s)) => *s = (*s + 1) % 3,
                Some(Mount::Tmpfs(_, size)) => *size = Some(size.map_or(1, |s| s + 1)),
                Some(Mount::Secret(id)) => id.push('x'),
                Some(Mount::Network(h)) if !later_network => *h = !*h,
                _ => c.push('x'),
            }
        }
        Step::RunArgv(a) => a[0].push('x'),
        Step::Env(_, v) => v.push('x'),
        Step::Workdir(w) => w.push('x'),
        Step::User(u) => u.push('x'),
        Step::Copy(Src::Context(p), _) | Step::Copy(Src::Stage(_, p), _) => p.push('x'),
        Step::Mkdir(_, m) => *m ^= 0o1,
        Step::File(_, c) => c.push('x'),
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn formatting_and_names_keep_digests(p in prog(), a in style(), b in style()) {
        let (sa, sb) = (render(&p, &a), render(&p, &b));
        prop_assert_eq!(digests(&sa), digests(&sb), "\n--- A\n{}\n--- B\n{}", sa, sb);
    }

    #[test]
    fn changes_of_meaning_change_the_digest(p in prog(), st in style(), which in 0usize..8) {
        let q = mutate(&p, which);
        let (sp, sq) = (render(&p, &st), render(&q, &st));
        prop_assert_ne!(digests(&sp).0, digests(&sq).0, "\n--- before\n{}\n--- after\n{}", sp, sq);
    }

    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let src = String::from_utf8_lossy(&bytes);
        let _ = kiln_frontend::parse(&src);
        let _ = kiln_frontend::check("Kilnfile", &src, &Options::default());
    }

    #[test]
    fn checker_never_panics_on_token_soup(tokens in prop::collection::vec(prop::sample::select(vec![
        "let", "a", "b", "=", ";", "(", ")", "[", "]", ",", ".", "!", "\"x\"", "\"/y\"", "0o755",
        "42", "true", "image", "static_base", "scratch", "context", "path", "run", "copy",
        "cache", "secret", "format", "\"{}\"", "r#\"z\"#", "/*", "*/", "//", "\n", "\"", "\\",
        "arg", "mkdir", "env", "network", "\"none\"", "bind", "tmpfs", "expose", "entrypoint",
    ]), 0..80)) {
        let src = tokens.join(" ");
        let _ = kiln_frontend::compile("Kilnfile", &src, &Options::default());
    }
}

#[test]
fn renaming_a_binding_keeps_the_digest_but_not_the_names() {
    let a = "let build = image(\"debian:bookworm\").run(\"make\");\nlet app = static_base().copy(build.path(\"/out\"), \"/out\");\n";
    let b = a.replace("build", "b2").replace("app", "final_image");
    let ca = compile("Kilnfile", a, &Options::default()).unwrap();
    let cb = compile("Kilnfile", &b, &Options::default()).unwrap();
    assert_eq!(ca.definition.digest(), cb.definition.digest());
    assert_ne!(
        ca.definition.to_text(),
        cb.definition.to_text(),
        "names travel beside the digest"
    );
}

#[test]
fn build_args_and_platform_change_the_digest() {
    let src =
        "let v = arg(\"V\", \"1\");\nlet app = image(format!(\"debian:{}\", v)).run(\"true\");\n";
    let d = |opts: &Options| compile("Kilnfile", src, opts).unwrap().definition.digest();
    let base = d(&Options::default());
    let mut with_arg = Options::default();
    with_arg.build_args.insert("V".into(), "2".into());
    assert_ne!(base, d(&with_arg));
    let mut same_as_default = Options::default();
    same_as_default.build_args.insert("V".into(), "1".into());
    assert_eq!(base, d(&same_as_default));
    let arm = Options {
        platform: Some("linux/arm64".parse().unwrap()),
        ..Options::default()
    };
    assert_ne!(base, d(&arm));
}

#[test]
fn context_copies_select_only_their_files() {
    let src = "let app = static_base().copy(context().path(\"bin/app\"), \"/app\").copy(context().path(\"etc\"), \"/etc/app\", [exclude(\"*.bak\")]);\n";
    let c = compile("Kilnfile", src, &Options::default()).unwrap();
    let sources: Vec<_> = c
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            kiln_dag::Op::Source(kiln_dag::SourceOp::Context {
                include, exclude, ..
            }) => Some((include.clone(), exclude.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        sources,
        vec![
            (vec!["bin/app".to_string()], vec![]),
            (vec!["etc".to_string()], vec!["etc/*.bak".to_string()]),
        ]
    );
}
