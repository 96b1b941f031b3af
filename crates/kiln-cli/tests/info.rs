//! `kiln info` on this machine, as root, as a user with a subordinate range
//! and as one without.

use std::process::Command;

fn info(user: Option<&str>) -> serde_json::Value {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let mut cmd = match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--init-groups",
                kiln,
            ]);
            c
        }
        None => Command::new(kiln),
    };
    let out = cmd
        .args(["info", "--format", "json"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln info as {user:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn info_reports_driver_mapping_and_namespaces() {
    if !rustix_is_root() {
        return; // CI runs as root and covers the users below
    }
    let root = info(None);
    assert_eq!(root["root"], true);
    assert_eq!(root["driver"], "overlay");
    // real root's steps run as an unprivileged host range, and `kiln info`
    // says which: root's /etc/subuid entry, else the fixed one
    let mapping = root["id_mapping"].as_str().unwrap();
    assert!(
        mapping.starts_with("root mapped to an unprivileged range"),
        "{mapping}"
    );
    let root_entry = std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("root:") || l.starts_with("0:"));
    if !root_entry {
        assert!(mapping.contains("= 2147483648-2147549183"), "{mapping}");
    }
    assert_eq!(root["namespaces"].as_array().unwrap().len(), 6);

    let user = info(Some("kilntest"));
    assert_eq!(user["root"], false);
    assert_eq!(user["single_id"], false);
    assert!(
        user["id_mapping"]
            .as_str()
            .unwrap()
            .starts_with("subordinate"),
        "{user}"
    );
    assert!(user["driver"].is_string(), "{user}");

    let nosub = Command::new("id")
        .args(["-g", "kilnnosub"])
        .output()
        .unwrap();
    let gid = String::from_utf8(nosub.stdout).unwrap().trim().to_string();
    let out = Command::new("setpriv")
        .args([
            "--reuid=kilnnosub",
            &format!("--regid={gid}"),
            "--init-groups",
            env!("CARGO_BIN_EXE_kiln"),
        ])
        .args(["info"])
        .current_dir("/")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("id mapping:      single id"), "{text}");
    assert!(
        text.contains("warning: no subordinate ID range for user `kilnnosub`"),
        "{text}"
    );
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
