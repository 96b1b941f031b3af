//! `KILN_SANDBOX_DRIVER` picks the driver: a test binary of its own,
//! because setting a variable races every other test that reads the
//! environment (std::env::set_var's safety contract).

mod common;

use common::{World, layer_entries, rerun_as, run};
use kiln_runtime::{Mount, MountKind};

#[test]
fn copy_driver_keeps_mounts_out_and_honours_env_choice() {
    let w = World::new();
    let data = w.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in"), "from host\n").unwrap();
    if !common::is_root() {
        // the step's root is this user: the bind must be readable
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut spec = w.spec("cat /data/in && echo t > /tmp/t && echo kept > /kept");
    spec.mounts = vec![
        Mount {
            target: "/data".into(),
            kind: MountKind::Bind {
                source: data.clone(),
                readonly: true,
            },
        },
        Mount {
            target: "/tmp".into(),
            kind: MountKind::Tmpfs { size: None },
        },
    ];
    // SAFETY: the only test of this binary (a binary of its own because
    // of this): no other thread reads the environment
    unsafe { std::env::set_var("KILN_SANDBOX_DRIVER", "copy") };
    let r = run(&spec);
    unsafe { std::env::remove_var("KILN_SANDBOX_DRIVER") };
    let r = r.unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    assert_eq!(r.outcome.driver, kiln_runtime::Driver::Copy);
    assert_eq!(r.stdout, "from host\n");
    let names: Vec<_> = layer_entries(&w.upper, &r.outcome)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, ["kept"], "mount points and mounted content stay out");
    rerun_as(
        "kilntest",
        "copy_driver_keeps_mounts_out_and_honours_env_choice",
    );
}
