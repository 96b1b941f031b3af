//! buildx's flags that change what a `run` step sees, end to end with the
//! real binary, as root and as the unprivileged `kilntest`: `--ssh` with a
//! real `ssh-agent` holding a generated key (`ssh-add -l` inside the step,
//! Kilnfile `ssh()` and Dockerfile `RUN --mount=type=ssh`), `--add-host`,
//! `--shm-size`, `--ulimit`; `--call outline` of a Kilnfile and a
//! Dockerfile; a bare `--pull` against the loopback registry.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{Busybox, Registry, chown_kilntest};

struct Env {
    dir: tempfile::TempDir,
    rootless: bool,
}

impl Env {
    /// A store with `bb:1`: busybox plus the host's `ssh-add` and the
    /// libraries it loads.
    fn new(rootless: bool) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let env = Env { dir, rootless };
        let root = env.path("rootfs");
        Busybox::new(&["sh", "cat", "grep", "echo", "ls", "test", "id"])
            .file(
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/:/bin/sh\n",
            )
            .file("etc/group", "root:x:0:\nu:x:1000:\n")
            .write(&root);
        copy_with_libs(&root, Path::new("/usr/bin/ssh-add"));
        std::fs::create_dir_all(env.path("ctx")).unwrap();
        if rootless {
            chown_kilntest(env.dir.path());
        }
        env.ok(&["import", "rootfs", "-t", "bb:1"], &[]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        if self.rootless {
            chown_kilntest(self.dir.path());
        }
    }

    /// A command run as kiln's user (root, or `kilntest` through setpriv).
    fn as_user(&self, prog: &str) -> Command {
        if self.rootless {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid=kilntest",
                "--regid=kilntest",
                "--init-groups",
                prog,
            ]);
            c
        } else {
            Command::new(prog)
        }
    }

    fn kiln(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let home = self.path("home");
        let mut c = if self.rootless {
            common::kilntest_command(&home, self.dir.path(), args)
        } else {
            common::kiln_command(&home, self.dir.path(), args)
        };
        c.env_remove("SSH_AUTH_SOCK");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().expect("run kiln")
    }

    fn ok(&self, args: &[&str], envs: &[(&str, &str)]) -> (String, String) {
        let o = self.kiln(args, envs);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "kiln {args:?} failed (rootless: {}):\n{err}",
            self.rootless
        );
        (String::from_utf8(o.stdout).unwrap(), err)
    }

    fn fails(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        let o = self.kiln(args, envs);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "kiln {args:?} succeeded:\n{err}");
        err
    }

    /// Builds `ctx` (plain progress) and returns its root filesystem's
    /// regular files by path, and stderr.
    fn rootfs(&self, extra: &[&str], envs: &[(&str, &str)]) -> (BTreeMap<String, String>, String) {
        let _ = std::fs::remove_file(self.path("fs.tar"));
        let mut args = vec![
            "build",
            "ctx",
            "--progress",
            "plain",
            "-o",
            "type=tar,dest=fs.tar",
        ];
        args.extend_from_slice(extra);
        let (_, err) = self.ok(&args, envs);
        let bytes = std::fs::read(self.path("fs.tar")).unwrap();
        let mut out = BTreeMap::new();
        let mut a = tar::Archive::new(bytes.as_slice());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut s = String::new();
            if e.header().entry_type().is_file() {
                std::io::Read::read_to_string(&mut e, &mut s).unwrap_or_default();
            }
            out.insert(p, s);
        }
        (out, err)
    }
}

/// `prog` and every library `ldd` names, at their own paths under `root`.
fn copy_with_libs(root: &Path, prog: &Path) {
    let out = Command::new("ldd").arg(prog).output().expect("ldd");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut files = vec![prog.to_path_buf()];
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
}

/// An `ssh-agent` (run as kiln's user) holding a fresh ed25519 key whose
/// comment is `kiln-test-NAME`. Killed by its pid when dropped.
struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    fn start(env: &Env, name: &str) -> Agent {
        let dir = env.path(&format!("agent-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        if env.rootless {
            chown_kilntest(env.dir.path());
        }
        let key = dir.join("id");
        let sock = dir.join("agent.sock");
        let st = env
            .as_user("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("kiln-test-{name}"))
            .arg("-f")
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success(), "ssh-keygen");
        let child = env
            .as_user("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) is installed by .ci/setup");
        let agent = Agent { child, sock };
        for _ in 0..200 {
            if agent.sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let st = env
            .as_user("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .status()
            .unwrap();
        assert!(st.success(), "ssh-add");
        agent
    }

    fn sock(&self) -> &str {
        self.sock.to_str().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir` (the store), read as bytes.
fn any_file_contains(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    for e in walk(dir) {
        if let Ok(bytes) = std::fs::read(&e)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            return Some(e);
        }
    }
    None
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// Whether plain progress shows the `run` step whose command has `cmd` as
/// CACHED.
fn step_cached(progress: &str, cmd: &str) -> bool {
    progress
        .lines()
        .any(|l| l.starts_with("=>") && l.contains(cmd) && l.contains("CACHED"))
}

fn ssh_agent_is_forwarded(rootless: bool) {
    let env = Env::new(rootless);
    let a = Agent::start(&env, "a");
    env.write(
        "ctx/Kilnfile",
        r#"
let app = image("bb:1")
    .run("ssh-add -l > /keys && echo \"$SSH_AUTH_SOCK\" > /sock", [ssh()]);
"#,
    );
    let (fs, _) = env.rootfs(&["--ssh", "default"], &[("SSH_AUTH_SOCK", a.sock())]);
    assert!(
        fs["keys"].contains("kiln-test-a (ED25519)"),
        "{:?}",
        fs["keys"]
    );
    assert_eq!(fs["sock"], "/run/buildkit/ssh_agent.0\n");
    // the socket's mount point is not part of the image
    assert!(
        !fs.keys().any(|p| p.contains("ssh_agent")),
        "{:?}",
        fs.keys().collect::<Vec<_>>()
    );
    // the agent's path is nowhere in the store (records, layers, configs)
    assert_eq!(
        any_file_contains(&env.path("home"), a.sock().as_bytes()),
        None
    );

    // another agent at another path: the cache key has the id only
    let b = Agent::start(&env, "b");
    let spec = format!("default={}", b.sock());
    let (_, err) = env.rootfs(&["--ssh", &spec], &[]);
    assert!(step_cached(&err, "ssh-add -l"), "the step ran again: {err}");

    // a Dockerfile's named, required agent at a target of its own, several
    // sockets (the first that accepts)
    env.write(
        "ctx/Dockerfile",
        "FROM bb:1\nRUN --mount=type=ssh,id=deploy,target=/agent,required ssh-add -l > /keys2 && echo \"$SSH_AUTH_SOCK\" > /sock2\n",
    );
    let spec = format!("deploy={}/gone.sock,{}", env.path("").display(), b.sock());
    // every socket must exist when the flag is read
    let err = env.fails(
        &["build", "ctx", "-f", "ctx/Dockerfile", "--ssh", &spec],
        &[],
    );
    assert!(err.contains("gone.sock"), "{err}");
    let spec = format!("deploy={},{}", b.sock(), a.sock());
    let (fs, _) = env.rootfs(&["-f", "ctx/Dockerfile", "--ssh", &spec], &[]);
    assert!(
        fs["keys2"].contains("kiln-test-b (ED25519)"),
        "{:?}",
        fs["keys2"]
    );
    assert_eq!(fs["sock2"], "/agent\n");

    // a required agent that was not given: an error at the step's line
    let err = env.fails(&["build", "ctx", "-f", "ctx/Dockerfile"], &[]);
    assert!(err.contains("the SSH agent `deploy`"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("help: pass `--ssh deploy`"), "{err}");
    env.write(
        "ctx/Kilnfile",
        "let app = image(\"bb:1\")\n    .run(\"ssh-add -l\", [ssh(\"git\").required(true)]);\n",
    );
    let err = env.fails(&["build", "ctx"], &[]);
    assert!(err.contains("Kilnfile:2"), "{err}");
    assert!(err.contains("--ssh git"), "{err}");
    // a key file is not an agent
    let key = env.path("agent-a/id");
    let spec = format!("git={}", key.display());
    let err = env.fails(&["build", "ctx", "--ssh", &spec], &[]);
    assert!(err.contains("is not a socket"), "{err}");
}

#[test]
fn ssh_agent_is_forwarded_as_root() {
    ssh_agent_is_forwarded(false);
}

#[test]
fn rootless_ssh_agent_is_forwarded() {
    ssh_agent_is_forwarded(true);
}

fn hosts_shm_and_ulimits(rootless: bool) {
    let env = Env::new(rootless);
    env.write(
        "ctx/Kilnfile",
        r#"
let app = image("bb:1")
    .run("cat /etc/hosts > /hosts && grep ' /dev/shm ' /proc/mounts > /shm && ulimit -n > /nofile && ulimit -Hn > /nofile_hard");
"#,
    );
    let flags = [
        "--add-host",
        "db:10.1.2.3",
        "--add-host",
        "v6=::1",
        "--shm-size",
        "128m",
        "--ulimit",
        "nofile=512:1024",
    ];
    let (fs, _) = env.rootfs(&flags, &[]);
    assert!(fs["hosts"].contains("10.1.2.3\tdb\n"), "{}", fs["hosts"]);
    assert!(fs["hosts"].contains("::1\tv6\n"), "{}", fs["hosts"]);
    assert!(fs["shm"].contains("size=131072k"), "{}", fs["shm"]);
    assert_eq!(fs["nofile"], "512\n");
    assert_eq!(fs["nofile_hard"], "1024\n");
    // the step's own /etc/hosts is not in its layer
    assert!(!fs.contains_key("etc/hosts"));

    // the flags are in the step's cache key: without them it runs again
    let (fs, err) = env.rootfs(&[], &[]);
    assert!(!step_cached(&err, "cat /etc/hosts"), "{err}");
    assert!(!fs["hosts"].contains("10.1.2.3"));
    assert!(fs["shm"].contains("size=65536k"), "{}", fs["shm"]);
    assert_ne!(fs["nofile"], "512\n");
    // and the same flags again are a hit
    let (_, err) = env.rootfs(&flags, &[]);
    assert!(step_cached(&err, "cat /etc/hosts"), "{err}");

    // a hard limit above kiln's own cannot be given to a step
    let err = env.fails(&["build", "ctx", "--ulimit", "nofile=64:-1"], &[]);
    assert!(err.contains("ulimits"), "{err}");
    let err = env.fails(&["build", "ctx", "--ulimit", "files=1"], &[]);
    assert!(err.contains("unknown limit `files`"), "{err}");
    let err = env.fails(&["build", "ctx", "--add-host", "db"], &[]);
    assert!(err.contains("`--add-host`"), "{err}");
}

#[test]
fn hosts_shm_and_ulimits_as_root() {
    hosts_shm_and_ulimits(false);
}

#[test]
fn rootless_hosts_shm_and_ulimits() {
    hosts_shm_and_ulimits(true);
}

#[test]
fn call_outline_of_a_kilnfile_and_a_dockerfile() {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        rootless: false,
    };
    env.write(
        "ctx/Kilnfile",
        r#"// The Go version to build with.
let builder = image(format!("golang:{}", arg("GO_VERSION", "1.22")))
    .run("go build", [secret("netrc").required(true), ssh(), ssh("deploy").required(true)]);
// The app.
let app = static_base().copy(builder.path("/out"), "/app");
"#,
    );
    let (out, _) = env.ok(&["build", "ctx", "--call", "outline"], &[]);
    assert!(out.contains("TARGET:      app\n"), "{out}");
    assert!(out.contains("DESCRIPTION: The app.\n"), "{out}");
    assert!(
        out.contains("GO_VERSION   1.22    The Go version to build with.\n"),
        "{out}"
    );
    assert!(out.contains("SECRET   REQUIRED\nnetrc    true\n"), "{out}");
    assert!(
        out.contains("SSH       REQUIRED\ndefault\ndeploy    true\n"),
        "{out}"
    );
    let (json, _) = env.ok(&["build", "ctx", "--call", "outline,format=json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "app");
    assert_eq!(v["args"][0]["name"], "GO_VERSION");
    assert_eq!(v["args"][0]["value"], "1.22");
    assert_eq!(
        v["ssh"],
        serde_json::json!([{"name": "default"}, {"name": "deploy", "required": true}])
    );

    env.write(
        "ctx/Dockerfile",
        "# The base image's tag.\nARG TAG=bookworm\nFROM debian:${TAG} AS build\nRUN --mount=type=ssh,id=git,required --mount=type=secret,id=tok true\n",
    );
    let (json, _) = env.ok(
        &[
            "build",
            "ctx",
            "-f",
            "ctx/Dockerfile",
            "--call",
            "outline,format=json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "build");
    assert_eq!(v["args"][0]["description"], "The base image's tag.");
    assert_eq!(
        v["ssh"],
        serde_json::json!([{"name": "git", "required": true}])
    );
    assert_eq!(v["secrets"], serde_json::json!([{"name": "tok"}]));
    let (json, _) = env.ok(&["build", "ctx", "--call", "targets,format=json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["targets"][1],
        serde_json::json!({"name": "app", "default": true})
    );
    let err = env.fails(&["build", "ctx", "--call", "outline,format=yaml"], &[]);
    assert!(err.contains("unknown option `format=yaml`"), "{err}");
}

/// A bare `--pull` (buildx's) asks the registry for the tag again: a base
/// retagged there is used, where the default keeps the local copy.
#[test]
fn bare_pull_re_resolves_the_base() {
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
        rootless: false,
    };
    let reg = Registry::start();
    let base = format!("{}/base:1", reg.addr);
    // pushed from a store of its own, so the build's store has only what
    // it pulled
    let push = |text: &str| {
        env.write("base/data", text);
        env.write(
            "base/Kilnfile",
            "let b = static_base().copy(context().path(\"data\"), \"/data\");\n",
        );
        let out = format!("type=registry,name={base}");
        common::expect_ok(
            common::kiln_command(
                &env.path("pusher"),
                env.dir.path(),
                &["build", "base", "-o", &out],
            )
            .output()
            .unwrap(),
            "push the base",
        );
    };
    push("one\n");
    env.write(
        "ctx/Kilnfile",
        &format!("let app = image(\"{base}\").copy(context().path(\"f\"), \"/f\");\n"),
    );
    env.write("ctx/f", "f\n");
    let data = |args: &[&str]| {
        let _ = std::fs::remove_file(env.path("fs.tar"));
        env.ok(args, &[]);
        let bytes = std::fs::read(env.path("fs.tar")).unwrap();
        let mut a = tar::Archive::new(bytes.as_slice());
        let mut s = String::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == "data" {
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            }
        }
        s
    };
    let build = ["build", "ctx", "-o", "type=tar,dest=fs.tar"];
    assert_eq!(data(&build), "one\n");
    push("two\n");
    // the local copy, as `--pull missing` says
    assert_eq!(data(&build), "one\n");
    // a bare `--pull` before the context is `always`, not the context's value
    assert_eq!(
        data(&["build", "--pull", "ctx", "-o", "type=tar,dest=fs.tar"]),
        "two\n"
    );
}
