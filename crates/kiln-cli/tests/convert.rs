//! `kiln convert` and the lints of `kiln check` through the real binary:
//! the Kilnfile written from a Dockerfile checks and has the Dockerfile's
//! graph; `--strict` makes the lints' warnings fail the check.

use std::path::Path;
use std::process::{Command, Output};

fn kiln(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env("KILN_HOME", cwd.join("home"))
        .env_remove("KILN_LOG")
        .output()
        .expect("run kiln")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const DOCKERFILE: &str = "\
# the seeds' shape: build in one stage, ship on scratch
FROM scratch AS build
COPY hello /out/hello

FROM scratch AS app
COPY --from=build --chmod=755 /out/hello /hello
USER 65532
ENTRYPOINT [\"/hello\"]
";

#[test]
fn convert_writes_a_kilnfile_with_the_dockerfiles_graph() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
    let o = kiln(&["convert", "--offline", "-o", "Kilnfile", "."], dir.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let kilnfile = std::fs::read_to_string(dir.path().join("Kilnfile")).unwrap();
    assert!(kilnfile.contains("let build = scratch()"), "{kilnfile}");
    assert!(kilnfile.contains("let app = scratch()"), "{kilnfile}");
    assert!(kilnfile.contains("// the seeds' shape"), "{kilnfile}");
    assert!(
        // a stage source keeps owners and follows a named link, as BuildKit
        kilnfile.contains(
            ".copy(build.path(\"/out/hello\"), \"/hello\", [chmod(0o755), keep_owner(), follow_symlinks()])"
        ),
        "{kilnfile}"
    );
    // Both files give one graph.
    let graph = |file: &str| {
        let o = kiln(&["graph", "-f", file, "--format", "json", "."], dir.path());
        assert!(o.status.success(), "{file}: {}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (v["root"].clone(), v["config"].clone())
    };
    assert_eq!(graph("Kilnfile"), graph("Dockerfile"));
    // Stdout when no -o.
    let o = kiln(&["convert", "--offline", "."], dir.path());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), kilnfile);
}

#[test]
fn convert_refuses_a_kilnfile_and_locates_what_does_not_convert() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Kilnfile"), "let app = scratch();\n").unwrap();
    let o = kiln(&["convert", "--offline", "-f", "Kilnfile", "."], dir.path());
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("is already a Kilnfile"),
        "{}",
        text(&o.stderr)
    );
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nEXPOSE 80/TCP\n",
    )
    .unwrap();
    let o = kiln(
        &["convert", "--offline", "-f", "Dockerfile", "."],
        dir.path(),
    );
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("dockerfile::convert"), "{err}");
    assert!(err.contains("Dockerfile:2:8"), "{err}");
    assert!(!dir.path().join("Kilnfile.new").exists());
}

#[test]
fn lints_warn_and_strict_makes_them_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Runs as root and ships a full image that runs nothing.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM debian@sha256:0000000000000000000000000000000000000000000000000000000000000000\nCOPY hello /hello\n",
    )
    .unwrap();
    let o = kiln(&["check", "."], dir.path());
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("lint::root-user"), "{err}");
    assert!(err.contains("lint::could-be-static"), "{err}");
    assert!(!err.contains("lint::unpinned-base"), "{err}");
    let o = kiln(&["check", "--strict", "."], dir.path());
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("lint errors"),
        "{}",
        text(&o.stderr)
    );
    // A RUN on a distroless base cannot work: an error without --strict.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM gcr.io/distroless/static-debian12:nonroot\nRUN echo hi\n",
    )
    .unwrap();
    let o = kiln(&["check", "."], dir.path());
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("lint::run-without-shell"), "{err}");
    assert!(err.contains("Dockerfile:2:1"), "{err}");
}
