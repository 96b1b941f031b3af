//! The sandbox for real: namespaces, overlay, mounts, users, network,
//! timeouts. Every test runs as root and again as `kilntest` (which has a
//! subordinate range); the single-ID fallback runs as `kilnnosub`.

mod common;

use std::time::Duration;

use common::{World, layer_entries, rerun_as, run};
use kiln_runtime::{ExitStatus, Mount, MountKind, Network, RuntimeError};

#[test]
fn written_file_appears_in_the_diff() {
    let w = World::new();
    let r = run(&w.spec("echo hello > /new.txt && mkdir -p /opt/app && echo x > /opt/app/f && echo out && echo err >&2")).unwrap();
    assert!(r.outcome.success(), "{:?} {}", r.outcome, r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    let names: Vec<_> = layer_entries(&w.upper, &r.outcome)
        .into_iter()
        .map(|e| (e.0, e.4))
        .collect();
    assert_eq!(
        names,
        [
            ("new.txt".to_string(), "hello\n".to_string()),
            ("opt/".into(), "".into()),
            ("opt/app/".into(), "".into()),
            ("opt/app/f".into(), "x\n".into()),
        ],
        "only the step's changes, no mount points"
    );
    rerun_as("kilntest", "written_file_appears_in_the_diff");
}

#[test]
fn deleting_a_lower_file_gives_a_whiteout() {
    let w = World::new();
    let r = run(&w.spec("rm /etc/motd && rm -r /home && touch /var/new")).unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    let names: Vec<_> = layer_entries(&w.upper, &r.outcome)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(names.contains(&"etc/.wh.motd".to_string()), "{names:?}");
    assert!(names.contains(&".wh.home".to_string()), "{names:?}");
    assert!(
        std::fs::read(w.lower.join("etc/motd")).is_ok(),
        "lower untouched"
    );
    rerun_as("kilntest", "deleting_a_lower_file_gives_a_whiteout");
}

#[test]
fn chown_to_many_ids_works_under_the_subordinate_mapping() {
    let w = World::new();
    let r = run(&w.spec(
        "touch /a /b && chown 1000:1000 /a && chown 65532:65532 /b && stat -c '%u:%g' /a /b",
    ))
    .unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    assert_eq!(r.stdout, "1000:1000\n65532:65532\n");
    let e = layer_entries(&w.upper, &r.outcome);
    let owners: Vec<_> = e.iter().map(|e| (e.0.as_str(), e.1, e.2)).collect();
    assert_eq!(owners, [("a", 1000, 1000), ("b", 65532, 65532)]);
    rerun_as(
        "kilntest",
        "chown_to_many_ids_works_under_the_subordinate_mapping",
    );
}

fn listener() -> (std::net::TcpListener, u16) {
    common::listener(std::net::Ipv4Addr::LOCALHOST.into())
}

fn accept_in_background(l: std::net::TcpListener) -> std::thread::JoinHandle<Option<String>> {
    common::accept_in_background(l, Duration::from_secs(5))
}

#[test]
fn network_none_cannot_reach_the_host_and_host_can() {
    let w = World::new();
    let (l, port) = listener();
    let script = format!("echo ping | nc -w 2 127.0.0.1 {port}");
    let mut spec = w.spec(&script);
    spec.network = Network::None;
    let acc = accept_in_background(l.try_clone().unwrap());
    let r = run(&spec).unwrap();
    assert_ne!(
        r.outcome.status,
        ExitStatus::Code(0),
        "nc must fail without a network: {}",
        r.stderr
    );
    assert!(
        acc.join().unwrap().is_none(),
        "nothing may reach the host listener"
    );
    // loopback is up inside: a listener of its own answers
    // Connect only once the listener is in LISTEN state (port 8080 is 1F90,
    // state 0A; busybox nc listens on tcp6): retrying a refused connect
    // raced with a slow listener start under load. The listener's stdin
    // stays open (a background job's is /dev/null): busybox nc closes the
    // connection at EOF on stdin, which raced with the client's "hi".
    let mut spec = w.spec(
        "sleep 3 | nc -l -p 8080 > /tmp/got & \
         i=0; until grep -qs ':1F90 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6; do \
           i=$((i+1)); [ $i -lt 200 ] || exit 9; sleep 0.05; done; \
         echo hi | nc -w 2 127.0.0.1 8080; wait; cat /tmp/got; ip link show lo",
    );
    spec.network = Network::None;
    let r = run(&spec).unwrap();
    assert!(r.stdout.starts_with("hi\n"), "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("UP"), "{}", r.stdout);

    let mut spec = w.spec(&script);
    spec.network = Network::Host;
    let acc = accept_in_background(l);
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    assert_eq!(acc.join().unwrap().as_deref(), Some("ping\n"));
    assert_eq!(r.stdout, "pong\n");
    rerun_as(
        "kilntest",
        "network_none_cannot_reach_the_host_and_host_can",
    );
}

#[test]
fn the_step_cannot_see_host_paths() {
    let w = World::new();
    let secret = w.dir.path().join("host-only");
    std::fs::write(&secret, "host").unwrap();
    // a descriptor the runtime's caller holds without close-on-exec (as a
    // CI runner's shell may pass one down) stays outside too
    let held = std::fs::File::open(&secret).unwrap();
    rustix::io::fcntl_setfd(&held, rustix::io::FdFlags::empty()).unwrap();
    let script = format!(
        "test -e {s} && echo visible; test -e {d} && echo dir-visible; ls / | tr '\\n' ' '; echo; ps -o pid,args | wc -l; ls /proc/self/fd | tr '\\n' ' '; echo",
        s = secret.display(),
        d = w.dir.path().display()
    );
    let r = run(&w.spec(&script)).unwrap();
    drop(held);
    assert!(r.outcome.success(), "{}", r.stderr);
    assert!(!r.stdout.contains("visible"), "{}", r.stdout);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0].trim(), "bin dev etc home proc root tmp var");
    // ps sees only the step's own processes: header, sh, ps, wc
    let procs: usize = lines[1].trim().parse().unwrap();
    assert!(procs <= 5, "pid namespace shows {procs} lines");
    // stdio and the descriptor `ls` opens to list the directory
    assert_eq!(lines[2].trim(), "0 1 2 3", "{}", r.stdout);
    rerun_as("kilntest", "the_step_cannot_see_host_paths");
}

fn processes_with(token: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(token) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn a_step_past_its_timeout_is_killed_with_its_children() {
    let w = World::new();
    let n = 200_000 + std::process::id() % 100_000;
    let token = format!("sleep {n}");
    let mut spec = w.spec(&format!(
        "(sleep {n} &) ; sleep {n} & setsid sleep {n} & echo started; sleep {n}"
    ));
    spec.timeout = Some(Duration::from_millis(700));
    let t0 = std::time::Instant::now();
    let r = run(&spec).unwrap();
    assert!(r.outcome.timed_out);
    assert!(!r.outcome.success());
    assert_eq!(r.stdout, "started\n");
    assert!(t0.elapsed() < Duration::from_secs(30));
    // nothing of the step is left anywhere on the host
    let mut left = processes_with(&token);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = processes_with(&token);
    }
    assert!(left.is_empty(), "still running: {left:?}");
    rerun_as(
        "kilntest",
        "a_step_past_its_timeout_is_killed_with_its_children",
    );
}

#[test]
fn users_resolve_through_the_rootfs() {
    let w = World::new();
    let mut spec = w.spec("id -u; id -g; id -G; echo $HOME; pwd; echo $FOO; hostname");
    spec.user = Some("dev".into());
    spec.cwd = "/work/dir".into();
    spec.env = vec!["FOO=bar".into()];
    spec.hostname = "builder".into();
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "1000\n1000\n1000 10\n/tmp\n/work/dir\nbar\nbuilder\n"
    );
    spec.user = Some("nonroot".into());
    spec.cwd = "/".into();
    let r = run(&spec).unwrap();
    assert!(r.stdout.starts_with("65532\n65532\n"), "{}", r.stdout);
    spec.user = Some("ghost".into());
    let e = run(&spec).err().expect("unknown user");
    assert!(
        e.to_string()
            .contains("`ghost` is not in the image's /etc/passwd"),
        "{e}"
    );
    rerun_as("kilntest", "users_resolve_through_the_rootfs");
}

#[test]
fn exit_codes_and_exec_errors() {
    let w = World::new();
    let r = run(&w.spec("exit 7")).unwrap();
    assert_eq!(r.outcome.status, ExitStatus::Code(7));
    // the command is pid 1 of its namespace, immune to its own SIGKILL;
    // a child killed by a signal shows as 128+n through the shell
    let r = run(&w.spec("sh -c 'kill -9 $$'; exit $?")).unwrap();
    assert_eq!(r.outcome.status, ExitStatus::Code(137));
    let mut spec = w.spec("");
    spec.args = vec!["no-such-tool".into()];
    match run(&spec) {
        Err(RuntimeError::Exec { program, message }) => {
            assert_eq!(program, "no-such-tool");
            assert!(message.contains("No such file"), "{message}");
        }
        other => panic!("expected an exec error, got {:?}", other.map(|r| r.outcome)),
    }
    rerun_as("kilntest", "exit_codes_and_exec_errors");
}

#[test]
fn mounts_dev_and_proc() {
    let w = World::new();
    let ro = w.dir.path().join("ro");
    let cache = w.dir.path().join("cache");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(ro.join("data"), "ro-data").unwrap();
    let secret = w.dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    // a symlink in the image must not lead a mount target out of the rootfs
    std::os::unix::fs::symlink(w.dir.path().join("escape"), w.lower.join("evil")).unwrap();
    let mut spec = w.spec(
        "cat /mnt/ro/data; echo; touch /mnt/ro/x 2>/dev/null && echo ro-writable; \
         echo kept > /cache/f; cat /run/secrets/token; echo; \
         echo t > /scratch/t && cat /scratch/t; \
         test -c /dev/null && test -c /dev/urandom && test -L /dev/ptmx && test -d /dev/shm && echo devs; \
         head -c 4 /dev/zero | wc -c; grep -c . /proc/self/status >/dev/null && echo proc; \
         echo e > /evil/inside; cat /proc/self/status | grep NoNewPrivs",
    );
    spec.mounts = vec![
        Mount {
            target: "/mnt/ro".into(),
            kind: MountKind::Bind {
                source: ro.clone(),
                readonly: true,
            },
        },
        Mount {
            target: "/cache".into(),
            kind: MountKind::Cache {
                source: cache.clone(),
            },
        },
        Mount {
            target: "/run/secrets/token".into(),
            kind: MountKind::Secret { source: secret },
        },
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
            },
        },
        Mount {
            target: "/evil".into(),
            kind: MountKind::Tmpfs { size: None },
        },
    ];
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "ro-data\ns3cret\nt\ndevs\n4\nproc\nNoNewPrivs:\t1\n"
    );
    assert_eq!(std::fs::read_to_string(cache.join("f")).unwrap(), "kept\n");
    assert!(
        !w.dir.path().join("escape").exists(),
        "mount target stayed inside"
    );
    // mount points, the secret and tmpfs content are not changes of the step
    let names: Vec<_> = layer_entries(&w.upper, &r.outcome)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("secret")
            && !n.contains("scratch")
            && !n.starts_with("cache")
            && !n.starts_with("mnt")),
        "{names:?}"
    );
    rerun_as("kilntest", "mounts_dev_and_proc");
}

#[test]
fn single_id_fallback_without_subordinate_range() {
    if common::is_root() && !common::inner() {
        rerun_as("kilnnosub", "single_id_fallback_without_subordinate_range");
        return;
    }
    let w = World::new();
    let r =
        run(&w.spec("id -u; touch /f; chown 1000 /f 2>/dev/null || echo chown-refused")).unwrap();
    if common::is_root() {
        return;
    }
    assert_eq!(r.stdout, "0\nchown-refused\n");
    assert!(
        matches!(r.outcome.plan, kiln_runtime::MapPlan::Single { .. }),
        "{:?}",
        r.outcome.plan
    );
    let w0 = r.outcome.warnings.join("\n");
    assert!(
        w0.contains("/etc/subuid") && w0.contains("usermod --add-subuids"),
        "{w0}"
    );
}

#[test]
fn fuse_overlayfs_driver_works_too() {
    let w = World::new();
    let mut spec = w.spec("echo f > /fused && rm /etc/motd && chown 1000:1000 /fused 2>/dev/null; cat /proc/mounts | grep -c fuse");
    spec.driver = kiln_runtime::DriverChoice::FuseOverlayfs;
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    assert_eq!(r.outcome.driver, kiln_runtime::Driver::FuseOverlayfs);
    let e = layer_entries(&w.upper, &r.outcome);
    let names: Vec<_> = e.iter().map(|e| e.0.as_str()).collect();
    assert!(names.contains(&"fused"), "{names:?}");
    assert!(names.contains(&"etc/.wh.motd"), "{names:?}");
    rerun_as("kilntest", "fuse_overlayfs_driver_works_too");
}

fn tar_with(entries: &[(&str, u64, char)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, id, kind) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(*id);
        h.set_gid(*id);
        h.set_mode(if *kind == 'd' { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_size(0);
        h.set_entry_type(match kind {
            'd' => tar::EntryType::Directory,
            'c' => tar::EntryType::Char,
            _ => tar::EntryType::Regular,
        });
        if *kind == 'c' {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn layers_apply_with_ownership_inside_the_user_namespace() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let target = w.dir.path().join("layer");
    std::fs::create_dir(&target).unwrap();
    let tar = tar_with(&[
        ("home/", 0, 'd'),
        ("home/dev", 1000, 'f'),
        ("home/nonroot", 65532, 'f'),
        ("etc/.wh.motd", 0, 'f'),
        ("null", 0, 'c'),
    ]);
    let sum = common::runtime()
        .apply_layer(&mut &tar[..], &target, true)
        .unwrap();
    assert_eq!(sum.entries, 5);
    let (plan, _) = kiln_runtime::plan_mapping().unwrap();
    let map = plan.disk_mapping();
    let uid = |p: &str| std::fs::symlink_metadata(target.join(p)).unwrap().uid();
    assert_eq!(uid("home/dev"), map.uid_to_host(1000).unwrap());
    assert_eq!(uid("home/nonroot"), map.uid_to_host(65532).unwrap());
    let wh = std::fs::symlink_metadata(target.join("etc/motd")).unwrap();
    assert_eq!(wh.rdev(), 0, "overlay whiteout kept for a lower directory");
    // a layer's device node is never made on the host, as root neither:
    // skipped, said so
    assert_eq!(sum.skipped.len(), 1, "{:?}", sum.skipped);
    assert_eq!(sum.skipped[0].path, "null");
    // and the applied directory works as a lower of a sandbox
    let mut spec =
        w.spec("stat -c '%n %u' /home/dev /home/nonroot; test -e /etc/motd || echo gone");
    spec.lowers.push(target.clone());
    let r = run(&spec).unwrap();
    assert_eq!(
        r.stdout, "/home/dev 1000\n/home/nonroot 65532\ngone\n",
        "{}",
        r.stderr
    );
    rerun_as(
        "kilntest",
        "layers_apply_with_ownership_inside_the_user_namespace",
    );
}

#[test]
fn a_cancelled_step_is_killed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = World::new();
    let n = 300_000 + std::process::id() % 100_000;
    let spec = w.spec(&format!("sleep {n} & echo started; sleep {n}"));
    let cancel = AtomicBool::new(false);
    let mut out = Vec::new();
    let outcome = common::runtime()
        .run(
            &spec,
            &mut |_, b| {
                out.extend_from_slice(b);
                // cancel as soon as the step is under way
                cancel.store(true, Ordering::Relaxed);
            },
            Some(&cancel),
        )
        .unwrap();
    assert!(outcome.cancelled && !outcome.timed_out && !outcome.success());
    assert_eq!(out, b"started\n");
    let token = format!("sleep {n}");
    let mut left = processes_with(&token);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        left = processes_with(&token);
    }
    assert!(left.is_empty(), "still running: {left:?}");
    rerun_as("kilntest", "a_cancelled_step_is_killed");
}

/// The copying driver leaves the same upper directory (as a layer) as
/// kernel overlay, for every kind of change a step makes.
#[test]
fn copy_driver_gives_the_same_layer_as_overlay() {
    let script = "echo new > /new.txt && mkdir -p /opt/app && echo x > /opt/app/f \
        && rm /etc/motd && rm -r /home && mkdir /home && echo y > /home/only \
        && chmod 600 /etc/passwd && ln -s /new.txt /etc/link \
        && touch /a && chown 1000:1000 /a && cat /etc/group >/dev/null";
    let run_with = |driver| {
        let w = World::new();
        let mut spec = w.spec(script);
        spec.driver = driver;
        let r = run(&spec).unwrap();
        assert!(r.outcome.success(), "{:?}: {}", driver, r.stderr);
        (r.outcome.driver, layer_entries(&w.upper, &r.outcome), w)
    };
    let (d1, overlay, _w1) = run_with(kiln_runtime::DriverChoice::Overlay);
    let (d2, copied, w2) = run_with(kiln_runtime::DriverChoice::Copy);
    assert_eq!(d1, kiln_runtime::Driver::Overlay);
    assert_eq!(d2, kiln_runtime::Driver::Copy);
    assert_eq!(copied, overlay);
    let names: Vec<_> = copied.iter().map(|e| e.0.as_str()).collect();
    for n in [
        "etc/.wh.motd",
        "home/",
        "home/.wh..wh..opq",
        "etc/passwd",
        "a",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(!names.contains(&"etc/group"), "a read file is no change");
    // the copy is gone, only the upper and the lower remain
    kiln_runtime::wait_for_cleanup();
    let left: Vec<_> = std::fs::read_dir(w2.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.starts_with(".kiln-sandbox-")),
        "{left:?}"
    );
    rerun_as("kilntest", "copy_driver_gives_the_same_layer_as_overlay");
}

/// `Runtime::chown` gives files to container IDs (rootless: to the matching
/// subordinate IDs, which the calling user may not do itself) and keeps a
/// set-user-ID bit; `Runtime::write_layer` then reads every file back as
/// container IDs, also a private directory of another ID that the calling
/// user cannot enter (apt's `_apt` 0700 `partial`), and removes the tree.
#[test]
fn chown_and_write_layer_inside_the_user_namespace() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = World::new();
    let tree = w.dir.path().join("tree");
    std::fs::create_dir_all(tree.join("private")).unwrap();
    std::fs::write(tree.join("app"), b"#!/bin/sh\n").unwrap();
    std::fs::write(tree.join("private/f"), b"secret-ish\n").unwrap();
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(tree.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode("app", 0o4755);
    mode("private/f", 0o644);
    mode("private", 0o700);
    let rt = common::runtime();
    rt.chown(
        w.dir.path(),
        &[
            (tree.join("app"), 65532, 65532),
            (tree.join("private/f"), 42, 42),
            (tree.join("private"), 42, 42),
        ],
    )
    .unwrap();
    let (plan, _) = kiln_runtime::plan_mapping().unwrap();
    let map = plan.disk_mapping();
    let app = std::fs::symlink_metadata(tree.join("app")).unwrap();
    assert_eq!(app.uid(), map.uid_to_host(65532).unwrap());
    assert_eq!(
        app.mode() & 0o7777,
        0o4755,
        "chown kept the set-user-ID bit"
    );

    let mut tar = Vec::new();
    let opts = kiln_layer::WriteOptions {
        overlay_whiteouts: false,
        id_map: Some(map),
        source_date_epoch: Some(0),
        xattrs: false,
    };
    let sum = rt.write_layer(&tree, &mut tar, &opts, true).unwrap();
    assert_eq!(sum.entries, 3);
    assert!(!tree.exists(), "write_layer with remove left the tree");
    let mut got = Vec::new();
    for e in tar::Archive::new(&tar[..]).entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        got.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            h.uid().unwrap(),
            h.mode().unwrap() & 0o7777,
        ));
    }
    assert_eq!(
        got,
        [
            ("app".to_string(), 65532, 0o4755),
            ("private/".into(), 42, 0o700),
            ("private/f".into(), 42, 0o644),
        ]
    );
    rerun_as(
        "kilntest",
        "chown_and_write_layer_inside_the_user_namespace",
    );
}

#[test]
fn mount_targets_leave_no_stubs_in_the_upper() {
    let w = World::new();
    // a relative symlink in the image: a target below it is made through it,
    // in the rootfs, and removed again afterwards
    std::os::unix::fs::symlink("../run", w.lower.join("var/run")).unwrap();
    let cache = w.dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let secret = w.dir.path().join("secret");
    std::fs::write(&secret, "s").unwrap();
    let mut spec = w.spec(
        "test -s /etc/resolv.conf && test -s /etc/hosts && test -d /root/.cache/go/build \
         && test -f /run/secrets/a/b && test -d /var/run/lock/x && test -d /new/tmp && echo ok",
    );
    spec.mounts = vec![
        Mount {
            target: "/root/.cache/go/build".into(),
            kind: MountKind::Cache {
                source: cache.clone(),
            },
        },
        Mount {
            target: "/run/secrets/a/b".into(),
            kind: MountKind::Secret { source: secret },
        },
        Mount {
            target: "/var/run/lock/x".into(),
            kind: MountKind::Cache { source: cache },
        },
        Mount {
            target: "/new/tmp".into(),
            kind: MountKind::Tmpfs { size: None },
        },
    ];
    // the image has neither /etc/resolv.conf nor /etc/hosts: the host's
    // are bound there (host network) all the same
    assert!(!w.lower.join("etc/hosts").exists());
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "ok\n");
    // nothing at all: no mount point, no directory copied up for one
    let left: Vec<_> = std::fs::read_dir(&w.upper)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "upper directory not empty: {left:?} {:?}",
        std::process::Command::new("ls")
            .arg("-laR")
            .arg(&w.upper)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    );
    rerun_as("kilntest", "mount_targets_leave_no_stubs_in_the_upper");
}

#[test]
fn a_killed_step_leaves_no_state_behind() {
    let w = World::new();
    let mut spec = w.spec("echo started; touch /f; sleep 1000");
    spec.timeout = Some(Duration::from_millis(500));
    // run() waits for the supervisors' cleanup and checks that no state
    // directory is left beside the upper
    let r = run(&spec).unwrap();
    assert!(r.outcome.timed_out);
    assert_eq!(r.stdout, "started\n");
    // the step's changes up to the kill stay in the upper
    assert!(w.upper.join("f").exists());
    assert!(common::state_dirs(&w.upper).is_empty());
    rerun_as("kilntest", "a_killed_step_leaves_no_state_behind");
}

#[test]
fn a_step_without_lower_directories_gets_an_empty_rootfs() {
    let w = World::new();
    // nothing to run in an empty rootfs but the mounts: bind busybox in
    let mut spec = kiln_runtime::SandboxSpec::new(
        &w.upper,
        vec![
            "/busybox".into(),
            "sh".into(),
            "-c".into(),
            "/busybox ls -A / | /busybox tr '\\n' ' '".into(),
        ],
    );
    spec.mounts = vec![Mount {
        target: "/busybox".into(),
        kind: MountKind::Bind {
            source: w.lower.join("bin/busybox"),
            readonly: true,
        },
    }];
    for driver in [
        kiln_runtime::DriverChoice::Overlay,
        kiln_runtime::DriverChoice::FuseOverlayfs,
    ] {
        spec.driver = driver;
        let r = run(&spec).unwrap();
        assert!(r.outcome.success(), "{driver:?}: {}", r.stderr);
        assert_eq!(r.stdout, "busybox dev etc proc ", "{driver:?}");
        if driver == kiln_runtime::DriverChoice::Overlay {
            // the mount points were no change of the step (fuse-overlayfs
            // marks the directories it makes opaque with `.wh..wh..opq`
            // files, so its stub directories stay: a known limit)
            let left: Vec<_> = std::fs::read_dir(&w.upper)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{driver:?}: {left:?}");
        }
    }
    rerun_as(
        "kilntest",
        "a_step_without_lower_directories_gets_an_empty_rootfs",
    );
}

#[test]
fn a_chain_past_the_mount_option_page_mounts_layer_by_layer() {
    let w = World::new();
    // 80 layers with long paths: overlay options of about 8 KiB, twice
    // what mount(2) takes in one string
    let mut spec = w.spec("cat /which /f00 /f79; ls / | grep -c '^f[0-9]'");
    // the kernel's overlay (fuse-overlayfs takes its options on argv)
    spec.driver = kiln_runtime::DriverChoice::Overlay;
    for i in 0..80 {
        let l = w
            .dir
            .path()
            .join(format!("layer-{}-{i:02}", "x".repeat(64)));
        std::fs::create_dir(&l).unwrap();
        std::fs::write(l.join(format!("f{i:02}")), format!("{i}\n")).unwrap();
        // every layer has /which: the top one wins
        std::fs::write(l.join("which"), format!("{i}\n")).unwrap();
        spec.lowers.push(l);
    }
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    assert_eq!(r.stdout, "79\n0\n79\n80\n");
    assert_eq!(r.outcome.driver, kiln_runtime::Driver::Overlay);
    rerun_as(
        "kilntest",
        "a_chain_past_the_mount_option_page_mounts_layer_by_layer",
    );
}
