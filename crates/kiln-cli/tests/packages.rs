//! Debian package sets on `static_base()`: `debian("bookworm")
//! .packages(["python3"])` resolved, verified and unpacked without `RUN`,
//! the same image as root and as the unprivileged kilntest, running under
//! podman; `run` stays forbidden, bad names are located, unknown ones get
//! a did-you-mean from the index.

mod common;

use std::path::Path;

const PYTHON: &str = r#"let app = static_base()
    .packages(debian("bookworm").packages(["python3"]))
    .entrypoint(["python3", "-c", "print(1+1)"]);
"#;

fn write(dir: &Path, kilnfile: &str) {
    std::fs::write(dir.join("Kilnfile"), kilnfile).unwrap();
}

#[test]
fn python3_on_static_base_runs_the_same_as_root_and_rootless() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, PYTHON);
    let (root_out, _) = common::ok_in(d, &["build", "-o", "type=oci,dest=root.tar", "."]);
    std::fs::create_dir(d.join("podman")).unwrap();
    assert_eq!(
        common::podman_run(&d.join("podman"), &d.join("root.tar")),
        "2\n"
    );
    // the same set as kilntest, in a store of its own
    let user = d.join("user");
    std::fs::create_dir(&user).unwrap();
    write(&user, PYTHON);
    common::chown_kilntest(d);
    let (user_out, err) = common::kilntest_ok(
        &user.join("home"),
        &user,
        &["build", "-o", "type=oci,dest=user.tar", "."],
    );
    let digest = |out: &str| out.lines().last().unwrap_or("").trim().to_string();
    assert!(digest(&root_out).starts_with("sha256:"), "{root_out}");
    assert_eq!(
        digest(&root_out),
        digest(&user_out),
        "root and kilntest built different images:\n{err}"
    );
    // and the dpkg records are where scanners look
    common::ok_in(d, &["build", "-o", "type=local,dest=tree", "."]);
    let status = std::fs::read_to_string(d.join("tree/var/lib/dpkg/status.d/python3")).unwrap();
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(d.join("tree/var/lib/dpkg/status.d/libc6.md5sums").is_file());
    assert!(
        std::fs::symlink_metadata(d.join("tree/bin"))
            .unwrap()
            .is_symlink()
    );
    // the package layer's record is build cache like any other
    let (out, err) = common::ok_in(d, &["cache", "check"]);
    assert!(
        format!("{out}{err}").contains("the store is consistent"),
        "{out}{err}"
    );
    let (du, err) = common::ok_in(d, &["cache", "du"]);
    assert!(format!("{du}{err}").contains("deb-layer"), "{du}{err}");
    common::ok_in(d, &["cache", "prune"]);
    let (out, err) = common::ok_in(d, &["cache", "check"]);
    assert!(
        format!("{out}{err}").contains("the store is consistent"),
        "{out}{err}"
    );
    // and a rebuild after the prune gives the same image
    let (again, _) = common::ok_in(d, &["build", "."]);
    assert_eq!(digest(&again), digest(&root_out));
}

#[test]
fn run_stays_forbidden_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        r#"let app = static_base()
    .packages(debian("bookworm").packages(["python3"]))
    .run("echo hi");
"#,
    );
    let o = common::kiln_in(d, &["check", "."]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("kiln::run-without-shell"), "{err}");
    write(
        d,
        r#"let app = static_base()
    .packages(debian("bookworm").packages(["python3", "Bad Name"]));
"#,
    );
    let o = common::kiln_in(d, &["check", "."]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("invalid package name `Bad Name`"), "{err}");
    assert!(err.contains("Kilnfile:2:"), "{err}");
}

#[test]
fn an_unknown_package_gets_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        r#"let app = static_base()
    .packages(debian("bookworm").packages(["pyhton3"]));
"#,
    );
    let o = common::kiln_in(d, &["build", "."]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("unknown package `pyhton3`"), "{err}");
    assert!(err.contains("did you mean `python3`"), "{err}");
}

/// The precise ELF check: a dynamically linked program copied onto
/// `static_base()` with Debian packages passes when its loader and
/// libraries are in the image, and the error names what is missing when
/// they are not.
#[test]
fn a_dynamic_binary_needs_its_loader_and_libraries_in_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // coreutils' `true`: dynamically linked against libc only
    std::fs::copy("/usr/bin/true", d.join("true")).unwrap();
    write(
        d,
        r#"let app = static_base()
    .packages(debian("bookworm").packages(["libc6"]))
    .copy(context().path("true"), "/usr/local/bin/true")
    .entrypoint(["/usr/local/bin/true"]);
"#,
    );
    common::ok_in(d, &["build", "-o", "type=oci,dest=ok.tar", "."]);
    std::fs::create_dir(d.join("podman")).unwrap();
    assert_eq!(common::podman_run(&d.join("podman"), &d.join("ok.tar")), "");
    // the same without libc (excluded): the loader and libc are named
    write(
        d,
        r#"let app = static_base()
    .packages(debian("bookworm").packages(["zlib1g"]).exclude(["libc6"]))
    .copy(context().path("true"), "/usr/local/bin/true");
"#,
    );
    let o = common::kiln_in(d, &["build", "."]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("`/usr/local/bin/true` is dynamically linked"),
        "{err}"
    );
    assert!(err.contains("the image lacks"), "{err}");
    assert!(err.contains("`libc.so.6`"), "{err}");
}

/// A C++ program on `static_base()` with only libc6: the error names the
/// libraries it lacks and, from the repository's `Contents` index, the
/// packages that ship them; with those packages added it builds.
#[test]
fn a_missing_library_names_the_package_that_ships_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("hello.cpp"),
        "#include <iostream>\nint main() { std::cout << \"hi\" << std::endl; }\n",
    )
    .unwrap();
    let o = std::process::Command::new("g++")
        .arg("-o")
        .arg(d.join("hello"))
        .arg(d.join("hello.cpp"))
        .output()
        .expect("run g++");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let kilnfile = |packages: &str| {
        format!(
            "let app = static_base()\n    .packages(debian(\"bookworm\").packages([{packages}]))\n    .copy(context().path(\"hello\"), \"/usr/local/bin/hello\")\n    .entrypoint([\"/usr/local/bin/hello\"]);\n"
        )
    };
    write(d, &kilnfile("\"libc6\""));
    let o = common::kiln_in(d, &["build", "."]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("`libstdc++.so.6` (in package `libstdc++6`)"),
        "{err}"
    );
    assert!(err.contains("add `libstdc++6` to"), "{err}");
    assert!(err.contains("Kilnfile:3:"), "{err}");
    // the index came into the store verified, as blobs do
    let (out, err) = common::ok_in(d, &["cache", "check"]);
    assert!(
        format!("{out}{err}").contains("the store is consistent"),
        "{out}{err}"
    );
    write(d, &kilnfile("\"libc6\", \"libstdc++6\""));
    common::ok_in(d, &["build", "-o", "type=oci,dest=ok.tar", "."]);
    std::fs::create_dir(d.join("podman")).unwrap();
    assert_eq!(
        common::podman_run(&d.join("podman"), &d.join("ok.tar")),
        "hi\n"
    );
}

/// Packages whose files belong to other users than root or carry set-ID
/// bits: `passwd` (setuid `passwd`, setgid-shadow `chage`), `base-files`
/// (`/var/local` root:staff 2775), `man-db` (`/var/cache/man` man:man).
/// The unprivileged kilntest cannot give files away or keep those bits on
/// disk, yet its image is root's, byte for byte.
#[test]
fn owners_and_set_id_bits_are_kept_rootless() {
    const SET: &str = r#"let app = static_base()
    .packages(debian("bookworm").packages(["passwd", "base-files", "man-db"]));
"#;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, SET);
    let (root_out, _) = common::ok_in(d, &["build", "-o", "type=oci,dest=root.tar", "."]);
    let user = d.join("user");
    std::fs::create_dir(&user).unwrap();
    write(&user, SET);
    common::chown_kilntest(d);
    let (user_out, _) = common::kilntest_ok(
        &user.join("home"),
        &user,
        &["build", "-o", "type=oci,dest=user.tar", "."],
    );
    let root_view = common::oci::read_oci_archive(&d.join("root.tar"));
    let entry = |p: &str| {
        let e = root_view.files.get(p).unwrap_or_else(|| panic!("no `{p}`"));
        (e.mode, e.uid, e.gid)
    };
    assert_eq!(entry("usr/bin/passwd"), (0o4755, 0, 0));
    assert_eq!(entry("usr/bin/chage"), (0o2755, 0, 42));
    assert_eq!(entry("var/local"), (0o2775, 0, 50));
    assert_eq!(entry("var/cache/man"), (0o755, 6, 12));
    let user_view = common::oci::read_oci_archive(&user.join("user.tar"));
    let listing = |v: &common::oci::ImageView| {
        v.files
            .iter()
            .map(|(p, e)| format!("{p} {e}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&root_view), listing(&user_view));
    let digest = |out: &str| out.lines().last().unwrap_or("").trim().to_string();
    assert!(digest(&root_out).starts_with("sha256:"), "{root_out}");
    assert_eq!(digest(&root_out), digest(&user_out));
}

/// `examples/cc-app`: a C++ program built in the Debian builder (served
/// from the loopback registry as `docker.io/library/debian:bookworm`, as
/// examples_e2e does), shipped dynamically linked on `static_base()` with
/// `libstdc++6` as a package set, runs under podman as 65532.
#[test]
fn cc_app_example_runs() {
    let reg = common::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::serve_debian_builder(&reg, d);
    let ctx = d.join("cc-app");
    std::fs::create_dir(&ctx).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cc-app");
    for f in ["Kilnfile", "main.cpp"] {
        std::fs::copy(src.join(f), ctx.join(f)).unwrap();
    }
    let mirror = format!("docker.io={}", reg.addr);
    let out = d.join("cc.tar");
    common::ok_in(
        d,
        &[
            "build",
            ctx.to_str().unwrap(),
            "--registry-mirror",
            &mirror,
            "-o",
            &format!("type=oci,dest={}", out.display()),
        ],
    );
    // and as the unprivileged kilntest, in a store of its own
    let user_out = build_as_kilntest(d, &ctx, &mirror, "cc-user.tar");
    std::fs::create_dir(d.join("podman")).unwrap();
    for image in [&out, &user_out] {
        assert_eq!(
            common::podman_run(&d.join("podman"), image),
            "hello from a dynamically linked C++ program on static_base()\n",
            "{}",
            image.display()
        );
    }
}

/// Builds the context `ctx` (a copy in a directory kilntest owns) as
/// kilntest with its own store under `d`; the OCI archive it wrote.
fn build_as_kilntest(d: &Path, ctx: &Path, mirror: &str, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let user = d.join("user");
    std::fs::create_dir_all(&user).unwrap();
    let o = std::process::Command::new("cp")
        .arg("-r")
        .arg(ctx)
        .arg(&user)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::chown_kilntest(&user);
    // the test's directory is root's and private: kilntest only passes
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    let uctx = user.join(ctx.file_name().unwrap());
    let out = user.join(name);
    common::kilntest_ok(
        &user.join("home"),
        &user,
        &[
            "build",
            uctx.to_str().unwrap(),
            "--registry-mirror",
            mirror,
            "-o",
            &format!("type=oci,dest={}", out.display()),
        ],
    );
    out
}

/// `examples/python-app`: dependencies installed in the Debian builder
/// from the example's wheels (one pure Python, one C extension), shipped on
/// `static_base()` with python3 as a package set; the app answers an HTTP
/// request under podman, as 65532.
#[test]
fn python_app_example_answers() {
    let reg = common::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::serve_debian_builder(&reg, d);
    let ctx = d.join("python-app");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-app");
    std::fs::create_dir_all(ctx.join("wheels")).unwrap();
    for f in ["Kilnfile", "app.py"] {
        std::fs::copy(src.join(f), ctx.join(f)).unwrap();
    }
    for w in std::fs::read_dir(src.join("wheels")).unwrap() {
        let w = w.unwrap();
        std::fs::copy(w.path(), ctx.join("wheels").join(w.file_name())).unwrap();
    }
    let mirror = format!("docker.io={}", reg.addr);
    let out = d.join("py.tar");
    common::ok_in(
        d,
        &[
            "build",
            ctx.to_str().unwrap(),
            "--registry-mirror",
            &mirror,
            "-o",
            &format!("type=oci,dest={}", out.display()),
        ],
    );
    let user_out = build_as_kilntest(d, &ctx, &mirror, "py-user.tar");
    let podman = d.join("podman");
    std::fs::create_dir(&podman).unwrap();
    for image in [&out, &user_out] {
        python_app_answers(&podman, image);
    }
    // what the packages brought is the same whoever built it (the
    // builder's `/app` may differ: pip writes its own records)
    let packaged = |p: &Path| {
        common::oci::read_oci_archive(p)
            .files
            .into_iter()
            .filter(|(path, _)| path != "app" && !path.starts_with("app/"))
            .map(|(path, e)| format!("{path} {e}"))
            .collect::<Vec<_>>()
    };
    let root_files = packaged(&out);
    assert!(
        root_files
            .iter()
            .any(|l| l.starts_with("usr/bin/python3.11 f")),
        "{root_files:?}"
    );
    assert_eq!(root_files, packaged(&user_out));
}

/// The python-app image `out` answers its self-test and runs as 65532.
fn python_app_answers(podman: &Path, out: &Path) {
    let o = common::podman(podman)
        .args(["run", "--rm", "--network", "none"])
        .arg(format!("oci-archive:{}", out.display()))
        .arg("--self-test")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        stdout,
        "&lt;hello from python3 on static_base()&gt; six 1.16.0, speedups markupsafe._speedups\n"
    );
    let o = common::podman(podman)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
        ])
        .arg(format!("oci-archive:{}", out.display()))
        .args(["-c", "import os; print(os.getuid())"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "65532\n");
}
