//! /proc of the sandbox: a fresh procfs of the step's pid namespace, with
//! the kernel's global knobs read-only and its internals masked, as runc
//! does (its `readonlyPaths` and `maskedPaths`).

use super::*;

/// Paths under /proc a step may read but not write: the global sysctls,
/// sysrq, interrupt affinities, buses.
const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Paths under /proc a step may not read at all: kernel memory, the
/// keyring list, timers and scheduler internals.
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "latency_stats",
    "acpi",
    "asound",
    "scsi",
];

/// Makes the paths of [`PROC_READONLY`] read-only and hides those of
/// [`PROC_MASKED`] in the procfs mounted at `proc` (a mount of the init's
/// own, so plain paths below it are safe). `null` is a file to bind over
/// masked files. Entries this kernel lacks are skipped.
pub(super) fn protect_proc(proc: &Path, null: &Path) -> R<()> {
    for name in PROC_READONLY {
        let p = proc.join(name);
        if p.symlink_metadata().is_err() {
            continue;
        }
        bind(&p, &p, "bind a /proc path")?;
    }
    for name in PROC_MASKED {
        let p = proc.join(name);
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            mount(
                "mask a /proc directory",
                Some(OsStr::new("tmpfs")),
                &p,
                Some("tmpfs"),
                (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong,
                Some("size=0,mode=555"),
            )?;
        } else {
            bind(null, &p, "mask a /proc file")?;
        }
    }
    // every bind and mask read-only at once, /proc itself stays as it is
    crate::mountattr::readonly_below(proc).map_err(fail("make /proc paths read-only"))
}
