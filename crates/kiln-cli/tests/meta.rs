//! `kiln version`, `kiln completion SHELL` and `kiln man DIR`.

use std::process::Command;

fn kiln(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let o = kiln(args);
    assert!(
        o.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn version_names_the_commit() {
    let v = ok(&["version"]);
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string());
    assert!(
        v.starts_with(&format!("kiln {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // built in this checkout: its commit (a tarball build says `unknown`)
    match head {
        Some(h) => assert!(v.contains(&h), "{v} lacks {h}"),
        None => assert!(v.contains("unknown"), "{v}"),
    }
    assert_eq!(ok(&["--version"]).trim(), v.trim());
}

#[test]
fn completion_scripts_name_the_commands_and_flags() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef kiln"),
        ("fish", "complete -c kiln"),
    ] {
        let s = ok(&["completion", shell]);
        assert!(s.contains(marker), "{shell}: {s}");
        for word in ["build", "convert", "iidfile", "build-arg"] {
            assert!(s.contains(word), "{shell} lacks {word}");
        }
        assert!(!s.contains("__sandbox-child"), "{shell}");
    }
    // bash parses it
    let s = ok(&["completion", "bash"]);
    let o = Command::new("bash")
        .args(["-n", "-c", &s])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!kiln(&["completion", "tcsh"]).status.success());
}

#[test]
fn man_pages_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    ok(&["man", out.to_str().unwrap()]);
    let page = |n: &str| std::fs::read_to_string(out.join(format!("{n}.1"))).unwrap();
    assert!(page("kiln").contains(".TH kiln 1"), "{}", page("kiln"));
    let build = page("kiln-build");
    assert!(build.contains(".TH kiln-build 1"));
    for flag in ["\\-\\-push", "\\-\\-iidfile", "\\-\\-build\\-arg"] {
        assert!(build.contains(flag), "kiln-build.1 lacks {flag}");
    }
    for n in ["check", "graph", "convert", "push", "version", "completion"] {
        assert!(out.join(format!("kiln-{n}.1")).is_file(), "{n}");
    }
    assert!(!out.join("kiln-__sandbox-child.1").exists());
    // man renders it (groff's warnings would name a broken page)
    if Command::new("man").arg("--version").output().is_ok() {
        let o = Command::new("man")
            .arg("-l")
            .arg(out.join("kiln-build.1"))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("iidfile"));
    }
}

#[test]
fn exit_codes_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let code = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .current_dir(dir.path())
            .env("KILN_HOME", &home)
            .output()
            .unwrap()
            .status
            .code()
    };
    std::fs::write(dir.path().join("Kilnfile"), "let app = static_base();\n").unwrap();
    assert_eq!(code(&["check"]), Some(0));
    std::fs::write(dir.path().join("Kilnfile"), "let app = nope();\n").unwrap();
    assert_eq!(code(&["check"]), Some(1));
    assert_eq!(code(&["build", "--no-such-flag"]), Some(2));
    assert_eq!(code(&["build", "--progress", "sideways"]), Some(2));
}

/// The README's command list names commands and flags that exist: each
/// `kiln A | B | C` alternative is a command whose `--help` lists the
/// `--flags` of its lines.
#[test]
fn readme_command_list_matches_the_cli() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let block = readme
        .split("## Commands")
        .nth(1)
        .and_then(|s| s.split("```").nth(1))
        .expect("a ```-block under ## Commands");
    let mut checked = 0;
    let mut current: Vec<String> = Vec::new();
    for line in block.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"kiln") {
            // `kiln images | tag SRC DST | save ...`: each alternative's
            // first word
            current = line
                .trim_start_matches("kiln ")
                .split(" | ")
                .filter_map(|alt| alt.split_whitespace().next())
                .filter(|w| w.chars().all(|c| c.is_ascii_lowercase()))
                .map(str::to_string)
                .collect();
            // `kiln cache du | prune | check`: the later alternatives may
            // be subcommands of the first
            for sub in &current {
                let top = kiln(&[sub, "--help"]).status.success();
                assert!(
                    top || kiln(&[&current[0], sub, "--help"]).status.success(),
                    "README: no command `kiln {sub}` nor `kiln {} {sub}`",
                    current[0]
                );
                checked += 1;
            }
        }
        let flags: Vec<String> = line
            .split(|c: char| c.is_whitespace() || matches!(c, '[' | ']' | '='))
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(str::to_string)
            .collect();
        if let Some(sub) = current.first() {
            let help = ok(&[sub, "--help"]);
            for f in flags {
                assert!(help.contains(&f), "README: `kiln {sub}` has no `{f}`");
            }
        }
    }
    assert!(checked >= 15, "only {checked} commands found");
}
