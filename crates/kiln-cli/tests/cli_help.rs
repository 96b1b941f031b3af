//! The flags a command lists are the ones it uses: registry flags only on
//! the commands that talk to registries, still accepted before the command
//! as earlier versions took them.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn registry_flags_only_where_registries_are_used() {
    for cmd in [
        &[][..],
        &["tag"],
        &["images"],
        &["info"],
        &["check"],
        &["graph"],
        &["cache"],
        &["import"],
    ] {
        let h = help(cmd);
        assert!(
            !h.contains("--registry-mirror") && !h.contains("--insecure-registry"),
            "kiln {cmd:?} --help:\n{h}"
        );
    }
    for cmd in ["build", "pull", "push", "save", "base"] {
        let h = help(&[cmd]);
        assert!(
            h.contains("--registry-mirror") && h.contains("--insecure-registry"),
            "kiln {cmd} --help:\n{h}"
        );
    }
    // both places parse: before the command and after it
    let home = tempfile::tempdir().unwrap();
    for args in [
        &["--registry-mirror", "docker.io=127.0.0.1:1", "images"][..],
        &[
            "save",
            "--registry-mirror",
            "docker.io=127.0.0.1:1",
            "nothing:1",
            "-o",
            "type=oci,dest=/dev/null",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .env("KILN_HOME", home.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}
