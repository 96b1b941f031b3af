//! End-to-end tests of `kiln check` and `kiln graph`: the real binary on the
//! real examples and on broken Kilnfiles in temp directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("KILN_LOG")
        .output()
        .expect("run kiln")
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_example_checks_clean() {
    let dir = examples_dir();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if !path.join("Kilnfile").is_file() {
            continue;
        }
        n += 1;
        // CONTEXT given: the Kilnfile defaults to CONTEXT/Kilnfile.
        let o = kiln(&["check", path.to_str().unwrap()], &dir);
        assert!(o.status.success(), "{}: {}", path.display(), stderr(&o));
        assert_eq!(stderr(&o), "", "{}: no warnings expected", path.display());
    }
    assert!(n >= 4);
}

#[test]
fn check_defaults_to_kilnfile_in_the_current_directory() {
    let o = kiln(&["check"], &examples_dir().join("go-hello"));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn check_reports_errors_with_location_caret_and_help() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "Kilnfile",
        "let builder = image(\"docker.io/library/debian:bookworm\").run(\"make\");\n\
         let app = static_base().copy(buidler.path(\"/out\"), \"/out\").run(\"ls\");\n",
    );
    let o = kiln(&["check"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Kilnfile:2:30"), "{err}");
    assert!(err.contains("cannot find `buidler`"), "{err}");
    assert!(err.contains("did you mean `builder`?"), "{err}");
    assert!(
        err.contains("`run` on an image built from `static_base()`"),
        "{err}"
    );
    assert!(err.contains("help:"), "{err}");
    assert!(
        err.contains("let app = static_base().copy(buidler.path"),
        "the source line is shown: {err}"
    );
    assert!(err.contains("2 errors"), "{err}");
    assert_eq!(stdout(&o), "");
}

#[test]
fn check_reports_several_syntax_errors_in_one_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let f = write(
        tmp.path(),
        "broken.kiln",
        "let a = image(\"x\" \"y\");\nlet b = ;\nlet c = scratch()\nlet d = scratch();\n",
    );
    let o = kiln(&["check", "-f", f.to_str().unwrap()], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    for loc in ["broken.kiln:1:19", "broken.kiln:2:9", "broken.kiln:3:18"] {
        assert!(err.contains(loc), "missing {loc}: {err}");
    }
}

#[test]
fn warnings_do_not_fail_check() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "Kilnfile",
        "let unused = \"x\";\nlet app = static_base();\n",
    );
    let o = kiln(&["check", "."], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("`unused` is never used"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_kilnfile_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let o = kiln(&["check", "nowhere"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("nowhere/Kilnfile"), "{err}");
    let o = kiln(&["graph", "-f", "missing.kiln"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.kiln"), "{}", stderr(&o));
}

#[test]
fn build_args_reach_the_checker() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "Kilnfile",
        "let v = arg(\"VERSION\");\nlet app = static_base().label(\"v\", v);\n",
    );
    let o = kiln(&["check"], tmp.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("build arg `VERSION` has no value"));
    let o = kiln(&["check", "--build-arg", "VERSION=1"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn graph_formats_agree_on_the_root() {
    let dir = examples_dir().join("go-hello");
    let text = kiln(&["graph"], &dir);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    let root_line = text
        .lines()
        .find(|l| l.starts_with("root "))
        .expect("root line");
    let root = root_line.trim_start_matches("root ").to_string();
    assert!(
        text.contains("# build: run \"go build"),
        "step names shown: {text}"
    );
    assert!(text.contains("(Kilnfile:"), "locations shown: {text}");

    let json = kiln(&["graph", "--format", "json"], &dir);
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("valid json");
    assert_eq!(v["root"].as_str(), Some(root.as_str()));
    assert!(v["vertices"].as_array().is_some_and(|a| a.len() >= 5));
    assert_eq!(v["config"]["entrypoint"][0], "/usr/local/bin/hello");

    let dot = kiln(&["graph", "--format", "dot"], &dir);
    assert!(dot.status.success());
    let dot = stdout(&dot);
    assert!(dot.starts_with("digraph kiln {"), "{dot}");
    assert!(dot.contains("->"), "{dot}");
}

#[test]
fn graph_target_and_build_args_select_the_graph() {
    let dir = examples_dir().join("go-hello");
    let root = |args: &[&str]| {
        let o = kiln(args, &dir);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .find(|l| l.starts_with("image "))
            .unwrap()
            .to_string()
    };
    let app = root(&["graph"]);
    let build = root(&["graph", "--target", "build"]);
    assert_ne!(app, build);
    assert_eq!(app, root(&["graph", "--target", "app"]));
    // GO_VERSION only labels the builder, which app copies from: both change.
    assert_ne!(
        build,
        root(&[
            "graph",
            "--target",
            "build",
            "--build-arg",
            "GO_VERSION=1.23"
        ])
    );
    assert_eq!(
        build,
        root(&[
            "graph",
            "--target",
            "build",
            "--build-arg",
            "GO_VERSION=1.22"
        ])
    );
}

#[test]
fn graph_unknown_target_lists_targets_and_prints_nothing() {
    let dir = examples_dir().join("go-hello");
    let o = kiln(&["graph", "--target", "ap"], &dir);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(err.contains("unknown target `ap`"), "{err}");
    assert!(
        err.contains("targets in this Kilnfile: build, app"),
        "{err}"
    );
}

#[test]
fn reformatting_keeps_the_graph_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(examples_dir().join("c-hello/Kilnfile")).unwrap();
    let squashed: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" /* x */ ")
        .replace("build", "b");
    let a = write(tmp.path(), "a.kiln", &src);
    let b = write(tmp.path(), "b.kiln", &squashed);
    let image = |f: &Path| {
        let o = kiln(&["graph", "-f", f.to_str().unwrap()], tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .find(|l| l.starts_with("image "))
            .unwrap()
            .to_string()
    };
    assert_eq!(image(&a), image(&b));
}

#[test]
fn help_documents_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let o = kiln(&["graph", "--help"], tmp.path());
    let out = stdout(&o);
    for flag in [
        "--file",
        "--target",
        "--build-arg",
        "--format",
        "--platform",
        "CONTEXT",
    ] {
        assert!(out.contains(flag), "graph --help lacks {flag}: {out}");
    }
    let o = kiln(&["check", "--help"], tmp.path());
    let out = stdout(&o);
    for flag in ["--file", "--target", "--build-arg", "CONTEXT"] {
        assert!(out.contains(flag), "check --help lacks {flag}: {out}");
    }
}
