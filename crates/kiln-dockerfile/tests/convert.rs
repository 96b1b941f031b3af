//! `kiln convert`: every Dockerfile of `tests/corpus/` converts to a
//! Kilnfile whose graph is the Dockerfile's (same root, same image config,
//! same definition digest), and the converted text is pinned by a snapshot.

mod common;

use kiln_dockerfile::{Platform, compile, convert};
use kiln_frontend::Options;

fn options(src: &str) -> Options {
    let mut opts = common::options(src);
    if opts.platform.is_none() {
        opts.platform = Some(Platform::parse("linux/amd64").unwrap());
    }
    opts
}

/// The Kilnfile binding `kiln convert` gives a stage name.
fn binding(stage: &str) -> String {
    stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[test]
fn corpus_converts_to_the_same_graph() {
    insta::glob!("corpus/*.Dockerfile", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let text = converts_to_the_same_graph(path, &src, &options(&src));
        insta::assert_snapshot!(text);
    });
}

/// The conformance suite's Dockerfiles (`crates/kiln-cli/tests/dockerfiles`,
/// built side by side with BuildKit) convert too: issue 16 item 3's cases.
#[test]
fn conformance_cases_convert_to_the_same_graph() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-cli/tests/dockerfiles");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 40,
        "{} cases in {}",
        cases.len(),
        dir.display()
    );
    for case in cases {
        let path = case.join("Dockerfile");
        let src = std::fs::read_to_string(&path).unwrap();
        // The suite's first line may pass `--secret ID` too: not a compile
        // option.
        let mut opts = Options::default();
        if let Some(flags) = src.lines().next().and_then(|l| l.strip_prefix("# test:")) {
            let mut words = flags.split_whitespace();
            while let Some(w) = words.next() {
                let v = words.next().expect("flag value");
                match w {
                    "--target" => opts.target = Some(v.to_string()),
                    "--build-arg" => {
                        let (k, val) = v.split_once('=').expect("K=V");
                        opts.build_args.insert(k.into(), val.into());
                    }
                    _ => {}
                }
            }
        }
        opts.platform = Some(Platform::parse("linux/amd64").unwrap());
        let text = converts_to_the_same_graph(&path, &src, &opts);
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        insta::assert_snapshot!(format!("conformance@{name}"), text);
    }
}

/// Converts `src`, checks that the Kilnfile's graph is the Dockerfile's
/// (root, config, definition digest) and that it has no warnings of its
/// own, and returns the Kilnfile.
fn converts_to_the_same_graph(path: &std::path::Path, src: &str, opts: &Options) -> String {
    let src = src.to_string();
    let docker = compile("Dockerfile", &src, opts, &common::DebianLike)
        .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render_plain()));
    let converted = convert("Dockerfile", &src, opts, &common::DebianLike)
        .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render_plain()));
    let kopts = Options {
        target: opts.target.as_deref().map(binding),
        ..opts.clone()
    };
    let kiln = kiln_frontend::compile("Kilnfile", &converted.text, &kopts).unwrap_or_else(|d| {
        panic!(
            "{}: the converted Kilnfile does not compile:\n{}\n{}",
            path.display(),
            converted.text,
            d.render_plain()
        )
    });
    assert_eq!(
        kiln.definition.config,
        docker.definition.config,
        "{}: image config differs; Kilnfile:\n{}",
        path.display(),
        converted.text
    );
    assert_eq!(
        kiln.definition.root,
        docker.definition.root,
        "{}: root differs; Kilnfile:\n{}\nkiln graph:\n{}\ndockerfile graph:\n{}",
        path.display(),
        converted.text,
        kiln.definition.to_text(),
        docker.definition.to_text()
    );
    assert_eq!(kiln.definition.digest(), docker.definition.digest());
    // Idiomatic: no warnings of its own (an unused binding, say).
    let own: Vec<_> = kiln
        .warnings
        .warnings()
        .filter(|d| d.code != "kiln::unused-build-arg")
        .collect();
    assert!(
        own.is_empty(),
        "{}:\n{}",
        path.display(),
        kiln.warnings.render_plain()
    );
    converted.text
}

/// What the Kilnfile cannot say is a located error, not a silent change.
#[test]
fn what_does_not_convert_is_a_located_error() {
    let src = "FROM debian:bookworm\nEXPOSE 80/TCP\n";
    let opts = options(src);
    let err = convert("Dockerfile", src, &opts, &common::DebianLike).unwrap_err();
    let text = err.render_plain();
    assert!(text.contains("dockerfile::convert"), "{text}");
    assert!(text.contains("Dockerfile:2:8"), "{text}");
}

/// A Dockerfile with errors is not converted: its own errors are returned.
#[test]
fn a_broken_dockerfile_gives_its_errors() {
    let src = "FROM debian:bookworm\nRUN --security=insecure true\n";
    let err = convert("Dockerfile", src, &options(src), &common::DebianLike).unwrap_err();
    assert!(err.render_plain().contains("--security=insecure"));
}
