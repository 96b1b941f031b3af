//! A step holds no host privileges, as root included: what a hostile-input
//! review did to the host from a `run` step, re-done here, must fail. Every
//! test runs as root and again as the unprivileged `kilntest` user. Nothing
//! here changes the host when the sandbox holds: writes put back the value
//! that is already there.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{World, layer_entries, rerun_as, run};
use kiln_runtime::{Mount, MountKind};

/// Docker's and BuildKit's default capability set for `RUN`, as
/// /proc/PID/status prints it.
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

#[test]
fn root_steps_cannot_change_host_kernel_settings_or_devices() {
    let w = World::new();
    let full = std::fs::metadata("/dev/full").unwrap();
    let pipe_limit = std::fs::read_to_string("/proc/sys/kernel/core_pipe_limit").unwrap();
    // each line says whether the attempt worked; `cat f > f` writes the value
    // already there, so a sandbox that fails this test still changes nothing
    let script = "\
        for f in kernel/core_pipe_limit kernel/core_pattern vm/overcommit_memory; do \
          (v=$(cat /proc/sys/$f); echo \"$v\" > /proc/sys/$f) 2>/dev/null && echo \"sysctl $f written\"; \
        done; \
        (echo 0 > /proc/sysrq-trigger) 2>/dev/null && echo sysrq written; \
        chmod 0666 /dev/full 2>/dev/null && echo chmod worked; \
        chown 0:0 /dev/full 2>/dev/null && echo chown worked; \
        touch /dev/full 2>/dev/null && echo touch worked; \
        echo x > /dev/null && echo null writable; \
        head -c 3 /dev/zero | wc -c; \
        for f in kcore keys timer_list sched_debug; do \
          test -e /proc/$f && test -s /proc/$f && echo \"$f readable\"; \
        done; \
        mknod /tmp/sda b 8 0 2>/dev/null && echo mknod worked; \
        grep CapBnd /proc/self/status; \
        echo made > /made; chown 5:6 /made; id -u";
    let r = run(&w.spec(script)).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        format!("null writable\n3\nCapBnd:\t{DOCKER_DEFAULT_CAPS}\n0\n"),
        "{}",
        r.stderr
    );
    let after = std::fs::metadata("/dev/full").unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.mtime(), after.mtime_nsec()),
        (full.mode(), full.uid(), full.mtime(), full.mtime_nsec())
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pipe_limit").unwrap(),
        pipe_limit
    );
    // the layer records the step's IDs, whatever the host range behind them
    let made = layer_entries(&w.upper, &r.outcome)
        .into_iter()
        .find(|e| e.0 == "made")
        .expect("the step's file is in its layer");
    assert_eq!((made.1, made.2, made.4.as_str()), (5, 6, "made\n"));
    if common::is_root() && !common::inner() {
        // on disk as the container IDs, as real root always stored them
        let m = std::fs::metadata(w.upper.join("made")).unwrap();
        assert_eq!((m.uid(), m.gid()), (5, 6));
        let plan = &r.outcome.plan;
        assert!(
            matches!(plan, kiln_runtime::MapPlan::Root { .. }),
            "{plan:?}"
        );
        assert!(
            plan.describe().contains("unprivileged range"),
            "{}",
            plan.describe()
        );
    }
    rerun_as(
        "kilntest",
        "root_steps_cannot_change_host_kernel_settings_or_devices",
    );
}

#[test]
fn root_is_an_unprivileged_host_range() {
    let w = World::new();
    let r = run(&w.spec("cat /proc/self/uid_map /proc/self/gid_map")).unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    let maps: Vec<Vec<u64>> = r
        .stdout
        .lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    let me = rustix::process::geteuid().as_raw() as u64;
    for m in &maps {
        if m[0] == 0 {
            // container root is never host root; as real root, not even
            // the calling user
            assert_ne!(m[1], 0, "{}", r.stdout);
            if common::is_root() {
                assert!(m[1] >= 100_000, "{}", r.stdout);
            } else {
                assert_eq!(m[1], me, "{}", r.stdout);
            }
        }
    }
    rerun_as("kilntest", "root_is_an_unprivileged_host_range");
}

#[test]
fn a_readonly_bind_cannot_be_remounted_writable() {
    let w = World::new();
    let src = w.dir.path().join("shared");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data"), "original\n").unwrap();
    let mut spec = w.spec(
        "mount -o remount,rw,bind /mnt/src 2>/dev/null && echo remounted; \
         mount -o remount,rw /mnt/src 2>/dev/null && echo sb remounted; \
         umount /mnt/src 2>/dev/null && echo unmounted; \
         unshare -Urm sh -c 'mount -o remount,rw,bind /mnt/src' 2>/dev/null && echo nested remounted; \
         echo poisoned > /mnt/src/data 2>/dev/null && echo written; \
         touch /mnt/src/new 2>/dev/null && echo created; \
         cat /mnt/src/data",
    );
    spec.mounts = vec![Mount {
        target: "/mnt/src".into(),
        kind: MountKind::Bind {
            source: src.clone(),
            readonly: true,
        },
    }];
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "original\n", "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(src.join("data")).unwrap(),
        "original\n"
    );
    assert!(!src.join("new").exists());
    rerun_as("kilntest", "a_readonly_bind_cannot_be_remounted_writable");
}

#[test]
fn a_fork_bomb_stops_at_the_process_limit() {
    let w = World::new();
    let mut spec = w.spec(
        "ulimit -u; (n=0; while [ $n -lt 200 ]; do sleep 30 & n=$((n+1)); done) 2>/dev/null; \
         set -- /proc/[0-9]*; echo $#",
    );
    spec.pids_limit = Some(64);
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "64", "{}", r.stdout);
    // sh and the sleeps that got a process (the glob needs no fork; the
    // subshell that could fork no more has exited)
    let procs: usize = lines[1].trim().parse().unwrap();
    assert!(procs <= 64, "{procs} processes: {}", r.stdout);
    assert!(procs >= 32, "the limit is not that low: {}", r.stdout);
    // the default
    let r = run(&w.spec("ulimit -u")).unwrap();
    assert_eq!(
        r.stdout.trim(),
        kiln_runtime::DEFAULT_PIDS_LIMIT.to_string(),
        "{}",
        r.stderr
    );
    rerun_as("kilntest", "a_fork_bomb_stops_at_the_process_limit");
}

#[test]
fn tmpfs_mounts_have_a_finite_default_size() {
    let w = World::new();
    let mut spec = w.spec("df -k /scratch /sized | tail -n 2 | awk '{print $2}'");
    spec.mounts = vec![
        Mount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs { size: None },
        },
        Mount {
            target: "/sized".into(),
            kind: MountKind::Tmpfs {
                size: Some(8 << 20),
            },
        },
    ];
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{} {}", r.stdout, r.stderr);
    let sizes: Vec<u64> = r.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(
        sizes,
        vec![kiln_runtime::DEFAULT_TMPFS_SIZE / 1024, 8 << 10],
        "{}",
        r.stdout
    );
    rerun_as("kilntest", "tmpfs_mounts_have_a_finite_default_size");
}

#[test]
fn a_store_behind_private_directories_works_with_every_mount_and_driver() {
    use std::os::unix::fs::PermissionsExt;
    // as KILN_HOME under /root or a 0700 store: the sandbox's root is not
    // the host's and may not walk these directories itself
    let w = World::new();
    let private = w.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let src = private.join("src");
    let cache = private.join("cache");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(src.join("data"), "bound\n").unwrap();
    let secret = private.join("token");
    std::fs::write(&secret, "s3cret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    for driver in [
        kiln_runtime::DriverChoice::Overlay,
        kiln_runtime::DriverChoice::FuseOverlayfs,
        kiln_runtime::DriverChoice::Copy,
    ] {
        let upper = w.dir.path().join(format!("upper-{driver:?}"));
        std::fs::create_dir(&upper).unwrap();
        let mut spec = w.spec(
            "cat /mnt/src/data /run/secrets/token; echo c > /cache/f; \
             echo made > /etc/made; stat -c '%u' /etc/passwd /etc/made",
        );
        spec.upper = upper.clone();
        spec.driver = driver;
        spec.mounts = vec![
            Mount {
                target: "/mnt/src".into(),
                kind: MountKind::Bind {
                    source: src.clone(),
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
                kind: MountKind::Secret {
                    source: secret.clone(),
                },
            },
        ];
        let r = run(&spec).unwrap();
        assert!(r.outcome.success(), "{driver:?}: {} {}", r.stdout, r.stderr);
        assert_eq!(
            r.stdout, "bound\ns3cret\n0\n0\n",
            "{driver:?}: {}",
            r.stderr
        );
        assert_eq!(std::fs::read_to_string(cache.join("f")).unwrap(), "c\n");
        let made = layer_entries(&upper, &r.outcome)
            .into_iter()
            .find(|e| e.0 == "etc/made")
            .unwrap_or_else(|| panic!("{driver:?}: the step's file is in its layer"));
        assert_eq!((made.1, made.2), (0, 0), "{driver:?}");
    }
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    rerun_as(
        "kilntest",
        "a_store_behind_private_directories_works_with_every_mount_and_driver",
    );
}

#[test]
fn the_state_directory_goes_when_the_caller_exits_at_once() {
    // the supervisor removes it, not a thread of the (gone) caller: as real
    // root too, whose sandbox is unprivileged on the host
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    // behind a private directory, as a store is
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-runtime-helper"))
        .arg("run")
        .arg(&w.lower)
        .arg(&w.upper)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !common::state_dirs(&w.upper).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(common::state_dirs(&w.upper), Vec::<String>::new());
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    rerun_as(
        "kilntest",
        "the_state_directory_goes_when_the_caller_exits_at_once",
    );
}
