//! What a SIGKILLed kiln leaves behind, and who removes it: a build killed
//! in a step that holds a secret leaves the secret's plaintext in
//! `/dev/shm/kiln-secrets-*`, which the next kiln command of any kind
//! removes (never a running build's, never another user's); a `type=local`
//! export killed midway leaves no tree that looks complete. Root and the
//! unprivileged `kilntest` (made by `.ci/setup`).

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Busybox, chown_kilntest};

const SECRET: &str = "kiln-leftover-secret-p4o5i6";

struct Env {
    dir: tempfile::TempDir,
    rootless: bool,
}

impl Env {
    fn new(rootless: bool) -> Self {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
            rootless,
        };
        Busybox::new(&["sh", "sleep", "cat"])
            .dir("tmp")
            .write(&env.path("rootfs"));
        std::fs::create_dir(env.path("ctx")).unwrap();
        env.chown();
        env.ok(&["import", "rootfs", "-t", "bb:1"]);
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn chown(&self) {
        if self.rootless {
            chown_kilntest(self.dir.path());
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let home = self.path("home");
        if self.rootless {
            common::kilntest_command(&home, self.dir.path(), args)
        } else {
            common::kiln_command(&home, self.dir.path(), args)
        }
    }

    fn kiln(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kiln")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.kiln(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "kiln {args:?} failed (rootless: {}):\n{err}",
            self.rootless
        );
        err
    }

    /// Starts kiln in the background (its pid is kiln's: setpriv execs it).
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// `/dev/shm/kiln-secrets-<pid>-*`, the secret directories of process `pid`.
fn secret_dirs_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("kiln-secrets-{pid}-");
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

fn wait_for<T>(what: &str, child: &mut Child, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("kiln ended ({status}) before {what}:\n{err}");
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn killed_builds_secrets_go_at_the_next_command(rootless: bool) {
    let env = Env::new(rootless);
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = image(\"bb:1\").run(\"cat /run/secrets/tok > /dev/null && sleep 300\", \
         [secret(\"tok\").required(true)]);\n",
    )
    .unwrap();
    std::fs::write(env.path("secret.txt"), SECRET).unwrap();
    env.chown();
    let mut build = env.spawn(&["build", "ctx", "--secret", "id=tok,src=secret.txt"]);
    let pid = build.id();
    let dir = wait_for("the secret directory", &mut build, || {
        secret_dirs_of(pid).into_iter().next()
    });
    // the plaintext, as the killed build will leave it
    let file = wait_for("the secret file", &mut build, || {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .next()
            .map(|e| e.path())
    });
    assert_eq!(std::fs::read_to_string(&file).unwrap(), SECRET);

    // another user's directory of a dead process is theirs to remove
    struct Removed(PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let theirs = Removed(PathBuf::from(format!(
        "/dev/shm/kiln-secrets-99999999-t1-0-{}",
        std::process::id()
    )));
    let theirs = &theirs.0;
    if !rootless {
        std::fs::create_dir(theirs).unwrap();
        let o = Command::new("chown")
            .arg("kilntest:kilntest")
            .arg(theirs)
            .output()
            .unwrap();
        assert!(o.status.success());
    }

    // a command while the build runs leaves its secrets alone
    env.ok(&["images"]);
    assert!(file.exists(), "a running build's secret was removed");

    build.kill().unwrap();
    build.wait().unwrap();
    // (another kiln on this machine may already have removed it now)
    env.ok(&["info"]);
    assert!(
        secret_dirs_of(pid).is_empty(),
        "the killed build's secrets are still in /dev/shm: {:?}",
        secret_dirs_of(pid)
    );
    if !rootless {
        assert!(theirs.exists(), "another user's directory was removed");
        assert_eq!(std::fs::metadata(theirs).unwrap().uid(), {
            let o = Command::new("id")
                .args(["-u", "kilntest"])
                .output()
                .unwrap();
            String::from_utf8(o.stdout)
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
        });
    }
}

#[test]
fn killed_builds_secrets_are_removed_by_the_next_command() {
    killed_builds_secrets_go_at_the_next_command(false);
}

#[test]
fn rootless_killed_builds_secrets_are_removed_by_the_next_command() {
    killed_builds_secrets_go_at_the_next_command(true);
}

/// Regular files under `dir`.
fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                n += 1;
            }
        }
    }
    n
}

const FILES: usize = 20_000;

fn killed_local_export_looks_incomplete(rootless: bool) {
    let env = Env::new(rootless);
    let many = env.path("many");
    for i in 0..FILES {
        let d = many.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
    }
    env.chown();
    env.ok(&["import", "many", "-t", "many:1", "--compression", "none"]);

    // a new destination: written beside it, there only once complete
    let mut save = env.spawn(&["save", "many:1", "-o", "type=local,dest=out"]);
    wait_for("a partly written export", &mut save, || {
        let partial = std::fs::read_dir(env.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n == "out" || n.starts_with(".out.kiln-export-")
            })?;
        (files_under(&partial) > 100).then_some(())
    });
    save.kill().unwrap();
    save.wait().unwrap();
    let out = env.path("out");
    if out.exists() {
        assert_eq!(files_under(&out), FILES, "a partial tree at `out`");
    }

    // an existing directory: written in place, marked until done
    let existing = env.path("existing");
    std::fs::create_dir(&existing).unwrap();
    env.chown();
    let mut save = env.spawn(&["save", "many:1", "-o", "type=local,dest=existing"]);
    wait_for("a partly written export", &mut save, || {
        (files_under(&existing) > 100).then_some(())
    });
    save.kill().unwrap();
    save.wait().unwrap();
    let n = files_under(&existing);
    assert!(
        existing.join(".kiln-incomplete").is_file() || n == FILES,
        "{n} of {FILES} files and no `.kiln-incomplete`"
    );
    // a full export completes it and removes the marker
    env.ok(&["save", "many:1", "-o", "type=local,dest=existing"]);
    assert!(!existing.join(".kiln-incomplete").exists());
    assert_eq!(files_under(&existing), FILES);
}

#[test]
fn killed_local_export_leaves_no_tree_that_looks_complete() {
    killed_local_export_looks_incomplete(false);
}

#[test]
fn rootless_killed_local_export_leaves_no_tree_that_looks_complete() {
    killed_local_export_looks_incomplete(true);
}
