//! `kiln images`: list the images in the local store.

use std::io::Write;
use std::process::ExitCode;

use kiln_oci::{Image, Store};
use miette::{IntoDiagnostic, WrapErr};

/// List local images: name, manifest digest and size
///
/// Shows every name in the local store (`$KILN_HOME`, else
/// `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`) with the digest of the
/// manifest it points at and the total size of its blobs (manifest, config
/// and compressed layers). Names come from `kiln build -t`, `kiln tag`,
/// `kiln import -t`, `kiln pull` and `kiln base static -t`. A
/// multi-platform image (`kiln build --platform a,b -t NAME`), or an image
/// built with attestations (the default), is one row: its index digest,
/// the size of all its blobs and its platforms.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format: `table` for people, `json` (an array of objects with
    /// `name`, `digest`, `size`, `layers`, `architecture`, `created`, and
    /// `platforms` for a multi-platform image) for tools
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Print only the names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(serde::Serialize)]
struct Row {
    name: String,
    digest: String,
    size: u64,
    layers: usize,
    architecture: String,
    /// an index (several platforms, or one image and its attestations): its
    /// platforms, in index order
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<String>,
    created: Option<String>,
    /// why the image could not be read, if it could not
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Opens the local store, with an error that says where it looked, and
/// holds its `gc` lock shared until the process exits, so `kiln cache
/// prune`/`check` never remove what this process uses.
pub(crate) fn open_store() -> miette::Result<Store> {
    static GC_LOCK: std::sync::OnceLock<kiln_store::StoreLock> = std::sync::OnceLock::new();
    let store = Store::open_default()
        .into_diagnostic()
        .wrap_err("cannot open the local image store (set `KILN_HOME` to choose where it lives)")?;
    if GC_LOCK.get().is_none() {
        let lock = kiln_worker::gc::hold_shared(&store).into_diagnostic()?;
        let _ = GC_LOCK.set(lock);
    }
    // Layers of lazily pulled base images are fetched on first read,
    // whichever command reads them.
    let lazy = kiln_registry::RegistrySource::new(&store, || {
        super::registry::settings().map_err(|e| {
            e.chain()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(": ")
        })
    });
    Ok(store.with_blob_source(lazy))
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let store = open_store()?;
    let tags = store.tags().into_diagnostic()?;
    let rows: Vec<Row> = tags
        .iter()
        .map(
            |(name, digest)| match kiln_oci::Index::load(&store, digest) {
                Ok(Some(index)) => index_row(&store, name, &index),
                _ => image_row(&store, name, digest),
            },
        )
        .collect();
    let mut out = std::io::stdout().lock();
    let res = if args.quiet {
        rows.iter().try_for_each(|r| writeln!(out, "{}", r.name))
    } else {
        match args.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut out, &rows).into_diagnostic()?;
                writeln!(out)
            }
            Format::Table => write_table(&mut out, &rows),
        }
    };
    res.into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}

fn image_row(store: &Store, name: &str, digest: &kiln_oci::Digest) -> Row {
    match Image::load(store, digest) {
        Ok(img) => Row {
            name: name.to_string(),
            digest: digest.to_string(),
            size: img.size(),
            layers: img.layers.len(),
            architecture: img.config.architecture().to_string(),
            platforms: Vec::new(),
            created: img.config.created().clone(),
            error: None,
        },
        Err(e) => Row {
            name: name.to_string(),
            digest: digest.to_string(),
            size: 0,
            layers: 0,
            architecture: String::new(),
            platforms: Vec::new(),
            created: None,
            error: Some(e.to_string()),
        },
    }
}

/// One row for a multi-platform image: the index digest, its platforms and
/// the size of every blob it holds (each blob once).
fn index_row(store: &Store, name: &str, index: &kiln_oci::Index) -> Row {
    let platforms: Vec<String> = index.platforms().iter().map(ToString::to_string).collect();
    let images: Vec<Image> = (index.images())
        .filter_map(|e| Image::load(store, &e.digest).ok())
        .collect();
    let (size, error) = match index.blobs(store) {
        Ok(blobs) => (
            blobs.iter().filter_map(|d| store.blob_size(d).ok()).sum(),
            None,
        ),
        Err(e) => (0, Some(e.to_string())),
    };
    Row {
        name: name.to_string(),
        digest: index.digest.to_string(),
        size,
        layers: images.iter().map(|i| i.layers.len()).max().unwrap_or(0),
        architecture: (images.iter())
            .map(|i| i.config.architecture().to_string())
            .collect::<Vec<_>>()
            .join(","),
        platforms,
        created: images.first().and_then(|i| i.config.created().clone()),
        error,
    }
}

fn write_table(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(4);
    writeln!(out, "{:width$}  {:19}  {:>9}", "NAME", "DIGEST", "SIZE")?;
    for r in rows {
        let short = r.digest.get(..19).unwrap_or(&r.digest);
        match &r.error {
            None if !r.platforms.is_empty() => writeln!(
                out,
                "{:width$}  {short:19}  {:>9}  ({})",
                r.name,
                human_size(r.size),
                r.platforms.join(", ")
            )?,
            None => writeln!(
                out,
                "{:width$}  {short:19}  {:>9}",
                r.name,
                human_size(r.size)
            )?,
            Some(e) => writeln!(out, "{:width$}  {short:19}  {:>9}  ({e})", r.name, "?")?,
        }
    }
    Ok(())
}

/// `1.2 MB`-style sizes (powers of 1000, as docker and podman print them).
pub(crate) fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
