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
        // The examples build on images of the local mirror, whose digests
        // differ between machines: the by-tag lint is the only finding.
        let err = stderr(&o);
        let codes: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("kiln::") || l.starts_with("lint::"))
            .collect();
        assert!(
            codes.iter().all(|c| *c == "lint::unpinned-base"),
            "{}: no other warnings expected:\n{err}",
            path.display()
        );
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
        err.contains("targets in this Kilnfile: tools, build, app"),
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

#[test]
fn nul_bytes_and_root_ids_fail_check_and_build_at_the_argument() {
    // Each used to run something else than written: a NUL cut the command
    // (nothing ran, "done"), dropped an env name, or `(uid_t)-1` kept root.
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "Kilnfile",
        "let build = image(\"docker.io/library/debian:bookworm\")\n    .env(\"A\\0B\", \"1\")\n    .user(\"4294967295\")\n    .run(\"\\0rm -rf /\");\n",
    );
    let o = kiln(&["check"], tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    for want in [
        "[Kilnfile:2:10]",
        "environment variable name contains a NUL byte",
        "[Kilnfile:3:11]",
        "user id `4294967295` is out of range",
        "[Kilnfile:4:10]",
        "command contains a NUL byte",
        "3 errors",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // `kiln build` stops at the same place, before pulling anything.
    let home = tmp.path().join("home");
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "."])
        .current_dir(tmp.path())
        .env("KILN_HOME", &home)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("[Kilnfile:4:10]"), "{}", stderr(&o));
}

#[test]
fn an_error_past_column_65535_is_reported_not_a_panic() {
    // miette panicked formatting a caret that far right (exit 101).
    let tmp = tempfile::tempdir().unwrap();
    let chain = ".env(\"A\", \"b\")".repeat(5000);
    write(
        tmp.path(),
        "Kilnfile",
        &format!("let app = static_base(){chain}.nosuch();\n"),
    );
    let o = kiln(&["check"], tmp.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("[Kilnfile:1:70025]"), "{err}");
    assert!(err.contains("no method `nosuch` on an image"), "{err}");
    assert!(
        err.len() < 4000,
        "the whole line was printed: {} bytes",
        err.len()
    );
}

/// Runs kiln with the read end of stdout or stderr closed before it
/// writes; returns the exit status and what the other stream got.
fn with_closed(stream: &str, args: &[&str], cwd: &Path) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("KILN_HOME", cwd.join("home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut other = String::new();
    if stream == "stdout" {
        drop(child.stdout.take());
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut other)
            .unwrap();
    } else {
        drop(child.stderr.take());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut other)
            .unwrap();
    }
    (child.wait().unwrap(), other)
}

#[test]
fn a_closed_stdout_or_stderr_pipe_ends_kiln_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    // Enough output that the pipe's reader is gone before kiln writes it.
    let mut src = String::new();
    for i in 0..300 {
        src.push_str(&format!(
            "let s{i} = image(\"docker.io/library/debian:bookworm\").run(\"echo {i}\");\n"
        ));
    }
    src.push_str("let bad = static_base().nosuch();\n");
    write(tmp.path(), "Kilnfile", &src);
    let quiet = |what: &str, (status, other): (std::process::ExitStatus, String)| {
        // Either dead of SIGPIPE, as `cat` is, or a plain exit: never a
        // panic (101) and nothing said about it on the other stream.
        assert_ne!(status.code(), Some(101), "{what}: {other}");
        assert!(
            status.signal() == Some(libc::SIGPIPE) || status.code().is_some(),
            "{what}: {status:?}"
        );
        assert!(!other.contains("panicked"), "{what}: {other}");
        assert!(!other.contains("Broken pipe"), "{what}: {other}");
    };
    // Diagnostics go to stderr.
    quiet(
        "check, stderr closed",
        with_closed("stderr", &["check"], tmp.path()),
    );
    // The graph goes to stdout.
    write(
        tmp.path(),
        "Kilnfile",
        &src.replace("let bad = static_base().nosuch();\n", ""),
    );
    for format in ["text", "json", "dot"] {
        let r = with_closed("stdout", &["graph", "--format", format], tmp.path());
        quiet(&format!("graph --format {format}, stdout closed"), r);
    }
    quiet(
        "images, stdout closed",
        with_closed("stdout", &["images", "--format", "json"], tmp.path()),
    );
}

/// A registry stand-in on `[::1]` that answers every request with 404, so a
/// pull that got past the reference grammar fails fast and says so.
fn not_found_registry_v6() -> Option<u16> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("[::1]:0").ok()?;
    let port = listener.local_addr().ok()?.port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    Some(port)
}

/// `kiln check`, `kiln graph` and `kiln pull` read image references with
/// one grammar (kiln-types'): a reference one accepts the others accept, a
/// rejected one is reported at the wrong part of the string, and every
/// spelling of one image is one vertex with the digest it always had.
#[test]
fn check_graph_and_pull_agree_on_references() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("kiln-home");
    let kiln_in = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(tmp.path())
            .env("NO_COLOR", "1")
            .env("KILN_HOME", &home)
            .env_remove("KILN_LOG")
            .env_remove("KILN_REGISTRY_MIRROR")
            .output()
            .expect("run kiln")
    };
    let kilnfile = |reference: &str| {
        write(
            tmp.path(),
            "Kilnfile",
            &format!("let app = image(\"{reference}\");\n"),
        );
    };
    // `let app = image("` is 17 bytes: the string's text starts in column 18.
    let col = |offset: usize| format!("Kilnfile:1:{}", 18 + offset);
    // (reference, the wrong part and its offset, the message)
    let rejected = [
        ("localhost:0/x:y", 10, "invalid registry port `0`"),
        ("localhost:65536/x", 10, "invalid registry port `65536`"),
        ("[::g]:5000/x:y", 1, "invalid IPv6 address `::g`"),
        ("docker.io/library/Debian:bookworm", 18, "must be lowercase"),
        ("debian:-x", 7, "invalid tag `-x`"),
    ];
    for (reference, offset, message) in rejected {
        kilnfile(reference);
        for cmd in ["check", "graph"] {
            let o = kiln_in(&[cmd]);
            assert_eq!(o.status.code(), Some(1), "{cmd} {reference}");
            let err = stderr(&o);
            assert!(err.contains(&col(offset)), "{cmd} {reference}: {err}");
            assert!(err.contains(message), "{cmd} {reference}: {err}");
            assert!(err.contains("expected "), "{cmd} {reference}: {err}");
        }
        // pull refuses it before any network, with the same words (miette
        // wraps them: compare them unwrapped)
        let o = kiln_in(&["pull", reference]);
        assert!(!o.status.success(), "pull {reference}");
        let err = stderr(&o);
        let err: Vec<&str> = err.split_whitespace().filter(|w| *w != "│").collect();
        let err = err.join(" ");
        assert!(
            err.contains(&format!("in image reference `{reference}`")),
            "pull {reference}: {err}"
        );
        assert!(err.contains(message), "pull {reference}: {err}");
    }

    // An IPv6 registry: check takes it, and so does pull (which then asks
    // the registry and is told there is no such image).
    kilnfile("[::1]:5000/x:y");
    let o = kiln_in(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    match not_found_registry_v6() {
        Some(port) => {
            let reference = format!("[::1]:{port}/x:y");
            kilnfile(&reference);
            let o = kiln_in(&["check"]);
            assert!(o.status.success(), "{}", stderr(&o));
            let o = kiln_in(&["pull", "--quiet", &reference]);
            assert!(!o.status.success());
            let err = stderr(&o);
            assert!(!err.contains("in image reference"), "{err}");
            assert!(err.contains(&format!("[::1]:{port}")), "{err}");
        }
        None => eprintln!("no IPv6 loopback here: the pull half is skipped"),
    }

    // Every spelling of Docker Hub's debian:bookworm is one vertex, with
    // the digest `debian:bookworm` has always had.
    const DEBIAN_BOOKWORM: &str =
        "sha256:ffee8f7084b45b5a7c1ad4c9fa9f6c2cc6c8c4a7fc7daead554d7e245c9cf539";
    for reference in [
        "debian:bookworm",
        "docker.io/library/debian:bookworm",
        "registry-1.docker.io/library/debian:bookworm",
        "index.docker.io/debian:bookworm",
    ] {
        kilnfile(reference);
        let o = kiln_in(&["graph", "--format", "json"]);
        assert!(o.status.success(), "{reference}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid json");
        assert_eq!(v["root"].as_str(), Some(DEBIAN_BOOKWORM), "{reference}");
        let source = &v["vertices"][0];
        assert_eq!(
            source["reference"].as_str(),
            Some("docker.io/library/debian:bookworm"),
            "{reference}: {source}"
        );
    }

    // Platforms too go through one table: containerd's spellings of arm64
    // are the vertex of `linux/arm64`.
    let root_for = |platform: &str| {
        let text = format!("let app = image(\"debian:bookworm\", [platform(\"{platform}\")]);\n");
        write(tmp.path(), "Kilnfile", &text);
        let o = kiln_in(&["graph", "--format", "json"]);
        assert!(o.status.success(), "{platform}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid json");
        v["root"].as_str().unwrap().to_string()
    };
    let arm64 = root_for("linux/arm64");
    assert_ne!(arm64, DEBIAN_BOOKWORM);
    for spelling in ["linux/aarch64", "linux/arm64/v8", "Linux/ARM64"] {
        assert_eq!(root_for(spelling), arm64, "{spelling}");
    }
}
