//! `kiln cache`: disk usage, pruning and consistency checks of the store.

use std::process::ExitCode;
use std::time::Duration;

use kiln_oci::Store;
use kiln_worker::gc::{self, Amount, PruneOptions, Removed};
use miette::{IntoDiagnostic, WrapErr};

/// Inspect and clean the build cache in the local store
///
/// The store (`$KILN_HOME`, else `$XDG_CACHE_HOME/kiln`, else
/// `~/.cache/kiln`) keeps image blobs, layer directories (snapshots),
/// cache records, `run` cache mounts and, after a crash, temp leftovers.
/// `prune` and `check` wait for running builds on the store to finish and
/// never remove what one of them uses.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    Du(DuArgs),
    Prune(PruneArgs),
    Check(CheckArgs),
}

/// Show how much space the store uses, by kind
#[derive(Debug, clap::Args)]
pub struct DuArgs {
    /// Output format: `table` for people, `json` (counts and bytes by kind)
    /// for tools
    #[arg(long, value_enum, default_value_t = super::images::Format::Table)]
    pub format: super::images::Format,
}

/// Remove build cache
///
/// Removes cache records, the layer blobs and directories only they use,
/// cache mounts and temp leftovers. Blobs of named images (`kiln images`)
/// stay unless `--all` is given, which removes the names too. The next
/// build re-runs what was removed.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Remove everything, named images included
    #[arg(long)]
    pub all: bool,

    /// Keep up to this much (oldest removed first), e.g. `10GB`, `500MiB`
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub keep_storage: Option<u64>,

    /// `until=DURATION`: remove only cache no build used for DURATION
    /// (e.g. `24h`, `90m`, `7d`)
    #[arg(long, value_name = "until=DURATION", value_parser = parse_filter)]
    pub filter: Vec<Duration>,
}

/// Verify every blob and record; drop what is broken
///
/// Re-hashes every blob and removes those whose bytes do not match their
/// digest, drops cache records and image names that refer to something
/// missing, removes temp leftovers of killed processes, and says what it
/// dropped. Exits 0 when the store is consistent afterwards.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    // Not `images::open_store`: that holds the store's `gc` lock shared,
    // and prune and check take it exclusively.
    let store = Store::open_default()
        .into_diagnostic()
        .wrap_err("cannot open the local store (set `KILN_HOME` to choose where it lives)")?;
    match args.command {
        Sub::Du(a) => du(&store, a),
        Sub::Prune(a) => prune(&store, a),
        Sub::Check(_) => check(&store),
    }
}

fn du(store: &Store, a: DuArgs) -> miette::Result<ExitCode> {
    let u = gc::disk_usage(store).into_diagnostic()?;
    if a.format == super::images::Format::Json {
        let mut v = serde_json::to_value(&u).into_diagnostic()?;
        v["total"] = u.total().into();
        println!("{}", serde_json::to_string_pretty(&v).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<(String, Amount)> = vec![
        ("blobs (named images)".into(), u.image_blobs),
        ("blobs (cache)".into(), u.cache_blobs),
        ("snapshots".into(), u.snapshots),
    ];
    let records = u.records.values().fold(Amount::default(), |a, b| Amount {
        count: a.count + b.count,
        bytes: a.bytes + b.bytes,
    });
    rows.push(("records".into(), records));
    for (k, a) in &u.records {
        rows.push((format!("  {k}"), *a));
    }
    rows.push(("cache mounts".into(), u.cache_mounts));
    rows.push(("temp leftovers".into(), u.temp));
    println!("{:<24} {:>8} {:>12}", "KIND", "COUNT", "SIZE");
    for (k, a) in rows {
        println!("{k:<24} {:>8} {:>12}", a.count, human(a.bytes));
    }
    println!("{:<24} {:>8} {:>12}", "total", "", human(u.total()));
    Ok(ExitCode::SUCCESS)
}

fn lock(store: &Store) -> miette::Result<kiln_store::StoreLock> {
    gc::hold_exclusive(store, || {
        eprintln!("waiting for the other kiln processes using the store to finish");
    })
    .into_diagnostic()
}

fn prune(store: &Store, a: PruneArgs) -> miette::Result<ExitCode> {
    let _lock = lock(store)?;
    let opts = PruneOptions {
        all: a.all,
        keep_storage: a.keep_storage,
        until: a.filter.iter().min().copied(),
    };
    let helper = std::env::current_exe().ok();
    let r = gc::prune(store, &opts, helper.as_deref()).into_diagnostic()?;
    summary(&r, "removed");
    for n in &r.notes {
        eprintln!("warning: {n}");
    }
    println!("{}", r.bytes());
    Ok(ExitCode::SUCCESS)
}

fn check(store: &Store) -> miette::Result<ExitCode> {
    let _lock = lock(store)?;
    let helper = std::env::current_exe().ok();
    let r = gc::check(store, helper.as_deref()).into_diagnostic()?;
    for n in &r.notes {
        eprintln!("{n}");
    }
    let failed = r
        .notes
        .iter()
        .filter(|n| {
            !n.ends_with(": dropped")
                && !n.ends_with(": removed")
                && !n.ends_with(": removed the name")
        })
        .count();
    if r.notes.is_empty() {
        eprintln!("the store is consistent");
    } else {
        summary(&r, "dropped");
    }
    if failed > 0 {
        eprintln!("error: {failed} problem(s) could not be repaired");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn summary(r: &Removed, verb: &str) {
    eprintln!(
        "{verb} {} record(s), {} blob(s), {} snapshot(s), {} cache mount(s), {} temp leftover(s){}: {} freed",
        r.records.count,
        r.blobs.count,
        r.snapshots.count,
        r.cache_mounts.count,
        r.temp.count,
        if r.tags.is_empty() {
            String::new()
        } else {
            format!(", image names {}", r.tags.join(", "))
        },
        human(r.bytes()),
    );
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// `10GB`, `1.5G`, `500MiB`, `4096`: bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: use e.g. `10GB`, `512MiB` or a byte count"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0f64.powi(4),
        u => {
            return Err(format!(
                "unknown size unit `{u}` in `{s}`: use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    Ok((n * mult) as u64)
}

/// `until=24h`, `until=1h30m`, `until=7d`, `until=90s`.
fn parse_filter(s: &str) -> Result<Duration, String> {
    let Some(v) = s.strip_prefix("until=") else {
        return Err(format!(
            "unknown filter `{s}`: the only filter is `until=DURATION` (e.g. `until=24h`)"
        ));
    };
    parse_duration(v)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: use e.g. `24h`, `90m`, `1h30m`, `7d`, `45s`");
    let mut total = 0u64;
    let mut num = String::new();
    let mut any = false;
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => return Err(bad()),
        };
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(
            parse_filter("until=1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_filter("until=7d").unwrap(),
            Duration::from_secs(604800)
        );
        assert!(parse_filter("until=5").is_err());
        assert!(parse_filter("label=x").is_err());
        assert!(parse_duration("").is_err());
    }
}
