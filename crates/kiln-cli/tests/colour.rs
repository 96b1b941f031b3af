//! Colour only on a terminal: a warning written to a pipe or a file carries
//! no escape sequences, `CLICOLOR_FORCE` turns them on, `NO_COLOR` wins.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// `kiln images` on a store left group- and world-readable: a warning.
fn warning(envs: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("images")
        .env("KILN_HOME", &home)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("WARN"), "{err}");
    err
}

#[test]
fn warnings_are_coloured_only_when_asked_or_on_a_terminal() {
    assert!(!warning(&[]).contains('\x1b'), "a pipe gets no colour");
    assert!(warning(&[("CLICOLOR_FORCE", "1")]).contains("\x1b["));
    assert!(!warning(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
}
