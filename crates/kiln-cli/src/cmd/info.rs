//! `kiln info`: what kiln's rootless sandbox can do on this machine.

use std::process::ExitCode;

use kiln_runtime::{HostReport, Runtime};

/// Show what the build sandbox can do on this machine
///
/// Tries, for real, what a `run` step needs: creating the user, mount, pid,
/// ipc, uts and network namespaces, mapping IDs (the full subordinate range
/// from /etc/subuid and /etc/subgid through newuidmap/newgidmap, a single ID
/// without a range, identity as root) and mounting the rootfs with a
/// snapshot driver (kernel overlayfs, else fuse-overlayfs). Exits 0 when
/// build steps can run here, 1 when they cannot (the reason is shown).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format: human-readable text or one JSON object
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn json(r: &HostReport) -> serde_json::Value {
    serde_json::json!({
        "root": r.root,
        "user": r.user,
        "id_mapping": r.id_mapping,
        "single_id": r.single_id,
        "newuidmap": r.newuidmap,
        "driver": r.driver.as_ref().ok(),
        "error": r.driver.as_ref().err(),
        "namespaces": r.namespaces,
        "warnings": r.warnings,
    })
}

fn text(r: &HostReport) -> String {
    let mut s = String::new();
    let root = if r.root { "yes" } else { "no" };
    s += &format!("user:            {} (root: {root})\n", r.user);
    s += &format!("id mapping:      {}\n", r.id_mapping);
    s += &format!(
        "newuidmap:       {}\n",
        r.newuidmap
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "not installed".into())
    );
    match &r.driver {
        Ok(d) => s += &format!("snapshot driver: {d}\n"),
        Err(e) => s += &format!("snapshot driver: none: {e}\n"),
    }
    let ns = if r.namespaces.is_empty() {
        "none".to_string()
    } else {
        r.namespaces.join(" ")
    };
    s += &format!("namespaces:      {ns}\n");
    for w in &r.warnings {
        s += &format!("warning: {w}\n");
    }
    s
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let report = Runtime::current_exe().probe();
    match args.format {
        Format::Text => print!("{}", text(&report)),
        Format::Json => println!("{}", json(&report)),
    }
    Ok(if report.driver.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
