//! `kiln lock`: every image tag and Debian package set the build file asks
//! for (every target, every `--platform`) resolved now and written to
//! `Kilnfile.lock` beside it; and the lock as `kiln build` reads it
//! ([`load`], `--locked`'s [`check_locked`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use kiln_dag::{Definition, Location, Op, Platform, SourceOp};
use kiln_frontend::Options;
use kiln_lock::{LockedImage, Lockfile};
use kiln_registry::Reference;
use miette::{IntoDiagnostic, WrapErr};

use super::build::BuildFailure;
use super::buildfile::BuildFile;
use super::check::{parse_build_args, report};
use crate::progress::Mode;

/// Pin the build's images and packages in `Kilnfile.lock`
///
/// Resolves every image tag of the build file (each target, each platform)
/// to the digest its registry gives now and every Debian package set to
/// exact `.deb`s (pool path, size, SHA256) from its verified index, and
/// writes them to FILE.lock beside the build file. `kiln build` then uses
/// exactly those, with no registry or index request when the store has
/// them; `kiln build --locked` fails when the lock is out of date. Entries
/// already in the lock are kept unless `--update` names them.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub registry: super::registry::RegistryOpts,

    /// The build context directory
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,

    /// The build file [default: CONTEXT/Kilnfile, else its Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Lock for these platforms (comma-separated or repeated) [default: the
    /// host's]; platforms locked earlier stay locked
    #[arg(long, value_name = "PLATFORM", value_delimiter = ',')]
    pub platform: Vec<String>,

    /// Build args, as `kiln build` takes them (they can change which
    /// images a file asks for). Repeatable
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,

    /// Resolve locked entries again: all of them, or with `--update=NAME`
    /// those of NAME (an image as written, e.g. `debian` or
    /// `debian:bookworm`, or a package of a set). Repeatable
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true)]
    pub update: Option<Vec<String>>,

    /// Write nothing: exit 1 when the lock lacks an entry the build file
    /// needs (as `kiln build --locked` would fail)
    #[arg(long)]
    pub check: bool,
}

/// The lock of `file`, if it has one beside it.
pub fn load(file: &BuildFile) -> miette::Result<Option<Arc<Lockfile>>> {
    let path = kiln_lock::path_for(&file.path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read `{}`", path.display()));
        }
    };
    match Lockfile::parse(&text) {
        Ok(l) => Ok(Some(Arc::new(l))),
        Err(e) => Err(LockFileError {
            message: format!("`{}`: {e}", path.display()),
            span: match &e {
                kiln_lock::LockError::Syntax { span: Some(s), .. } => Some(s.clone().into()),
                _ => None,
            },
            src: miette::NamedSource::new(path.display().to_string(), text),
        }
        .into()),
    }
}

/// A lock file kiln cannot read, shown at the line.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
#[diagnostic(
    code(kiln::lock_file),
    help("fix the line, or delete the file and run `kiln lock` to write it again")
)]
struct LockFileError {
    message: String,
    #[source_code]
    src: miette::NamedSource<String>,
    #[label("here")]
    span: Option<miette::SourceSpan>,
}

/// A source a lock pins, and where the build file asks for it.
#[derive(Debug, Clone)]
pub(crate) enum Wanted {
    Image {
        reference: Reference,
        platform: Platform,
        location: Option<Location>,
    },
    Packages {
        op: Box<kiln_dag::DebianPackages>,
        platform: Platform,
        location: Option<Location>,
    },
}

/// The lockable sources of `def` built for `platform`: registry images by
/// tag (a reference with a digest is pinned already) and package sets.
pub(crate) fn wanted(def: &Definition, platform: &Platform, out: &mut Vec<Wanted>) {
    for v in &def.vertices {
        let location = v.meta.location.clone();
        match &v.op {
            Op::Source(SourceOp::Image {
                reference,
                platform: own,
            }) => {
                let Ok(r) = Reference::parse(reference) else {
                    continue;
                };
                if r.digest().is_none() {
                    out.push(Wanted::Image {
                        reference: r.normalized(),
                        platform: own.clone().unwrap_or_else(|| platform.clone()),
                        location,
                    });
                }
            }
            Op::Source(SourceOp::DebianPackages(op)) => out.push(Wanted::Packages {
                op: Box::new(op.clone()),
                platform: platform.clone(),
                location,
            }),
            _ => {}
        }
    }
}

/// `--locked`: every source `def` needs is in the lock, and every locked
/// tag still points where the lock says (asked of the registry).
pub(crate) fn check_locked(
    file: &BuildFile,
    lock: Option<&Lockfile>,
    def: &Definition,
    platform: &Platform,
    context: &std::path::Path,
) -> miette::Result<Option<BuildFailure>> {
    let mut all = Vec::new();
    wanted(def, platform, &mut all);
    check_wanted(file, lock, &all, context)
}

/// [`check_locked`] over sources already collected with [`wanted`].
fn check_wanted(
    file: &BuildFile,
    lock: Option<&Lockfile>,
    all: &[Wanted],
    context: &std::path::Path,
) -> miette::Result<Option<BuildFailure>> {
    let lock_name = kiln_lock::path_for(&file.path).display().to_string();
    let fail = |message: String, loc: &Option<Location>, what: &str| {
        BuildFailure::new(&file.name, &file.text, message)
            .label(loc.as_ref(), what)
            .help(format!(
                "run `kiln lock` to add it to `{lock_name}`, then review and commit the change"
            ))
    };
    let Some(lock) = lock else {
        return Ok(Some(
            BuildFailure::new(
                &file.name,
                &file.text,
                format!("`--locked` needs `{lock_name}`, which does not exist"),
            )
            .help("run `kiln lock` to write it, then review and commit it"),
        ));
    };
    let mut moved = Vec::new();
    for w in all {
        match w {
            Wanted::Image {
                reference,
                platform,
                location,
            } => {
                let entry = lock.image(&reference.to_string());
                if entry.and_then(|e| e.manifest(platform)).is_none() {
                    return Ok(Some(fail(
                        format!(
                            "`{lock_name}` has no entry for the image `{reference}` ({platform})"
                        ),
                        location,
                        "this image",
                    )));
                }
                if let Some(e) = entry {
                    moved.push((reference.clone(), e.digest, location.clone()));
                }
            }
            Wanted::Packages {
                op,
                platform,
                location,
            } => {
                let id =
                    kiln_worker::packages::identity(op, platform, context).into_diagnostic()?;
                if lock.packages(&id).is_none() {
                    return Ok(Some(fail(
                        format!(
                            "`{lock_name}` has no entry for the {} package set {:?} ({})",
                            id.suite, id.request, id.architecture
                        ),
                        location,
                        "this package set",
                    )));
                }
            }
        }
    }
    if moved.is_empty() {
        return Ok(None);
    }
    let client = kiln_registry::Client::new(super::registry::settings()?).into_diagnostic()?;
    let rt = super::registry::runtime()?;
    for (reference, locked, location) in moved {
        let now = rt
            .block_on(client.resolve(&reference))
            .into_diagnostic()
            .wrap_err_with(|| format!("`--locked`: cannot ask where `{reference}` points now"))?;
        if now != locked {
            return Ok(Some(
                BuildFailure::new(
                    &file.name,
                    &file.text,
                    format!(
                        "`{reference}` now points at {now}, `{lock_name}` locks {locked}"
                    ),
                )
                .label(location.as_ref(), "this image")
                .help(format!(
                    "run `kiln lock --update={}` to take the new image, or build without `--locked` to keep the locked one",
                    reference.familiar()
                )),
            ));
        }
    }
    Ok(None)
}

/// Which entries `--update` refreshes.
struct Update(Option<Vec<String>>);

impl Update {
    fn image(&self, r: &Reference) -> bool {
        let Some(names) = &self.0 else { return false };
        names.is_empty()
            || names.iter().any(|n| match Reference::parse(n) {
                Ok(p) if p.tag().is_some() || p.digest().is_some() => {
                    p.normalized().to_string() == r.to_string()
                }
                Ok(p) => p.name() == r.name(),
                Err(_) => false,
            })
    }

    fn packages(&self, set: &kiln_lock::LockedPackages) -> bool {
        let Some(names) = &self.0 else { return false };
        names.is_empty()
            || names
                .iter()
                .any(|n| set.set.request.contains(n) || set.debs.iter().any(|d| &d.name == n))
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    let file = super::buildfile::load(args.file.as_deref(), &args.context)?;
    let lock_path = kiln_lock::path_for(&file.path);
    let old = load(&file)?;
    let update = Update(args.update.clone());
    let platforms = if args.platform.is_empty() {
        vec![Platform::host()]
    } else {
        args.platform
            .iter()
            .map(|p| p.parse::<Platform>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                miette::miette!(help = "e.g. `--platform linux/amd64,linux/arm64`", "{e}")
            })?
    };
    let context = std::path::absolute(&args.context)
        .into_diagnostic()
        .wrap_err_with(|| format!("bad context `{}`", args.context.display()))?;
    let build_args = parse_build_args(&args.build_args)?;
    // A Dockerfile's bases are read while it compiles: through the entries
    // that stay, so a kept base is the locked one.
    let kept = old.as_ref().map(|l| {
        let mut k = (**l).clone();
        k.images
            .retain(|i| Reference::parse(&i.reference).is_ok_and(|r| !update.image(&r)));
        Arc::new(k)
    });
    let mut want = Vec::new();
    for p in &platforms {
        let compile = |target: Option<String>| {
            let opts = Options {
                target,
                build_args: build_args.clone(),
                platform: Some(p.clone()),
                build_platform: None,
                ..Default::default()
            };
            file.compile_locked(
                &opts,
                kiln_worker::PullPolicy::Missing,
                &super::buildfile::Named::new(),
                kept.clone(),
            )
        };
        let first = match compile(None)? {
            Ok(c) => c,
            Err(diags) => {
                report(&diags);
                eprintln!(
                    "error: {}: cannot compile it to lock its sources",
                    file.name
                );
                return Ok(ExitCode::FAILURE);
            }
        };
        wanted(&first.definition, p, &mut want);
        for t in first.targets.iter().filter(|t| **t != first.target) {
            match compile(Some(t.clone()))? {
                Ok(c) => wanted(&c.definition, p, &mut want),
                Err(diags) => {
                    report(&diags);
                    eprintln!("error: {}: cannot compile target `{t}`", file.name);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    if args.check {
        // the sources every target and platform asks for, gathered above
        if let Some(f) = check_wanted(&file, old.as_deref(), &want, &context)? {
            f.print(Mode::Plain);
            return Ok(ExitCode::FAILURE);
        }
        eprintln!("`{}` is up to date", lock_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let store = super::images::open_store()?;
    let settings = super::registry::settings()?;
    let old_lock = old.as_deref().cloned().unwrap_or_default();
    let mut new = Lockfile::default();
    let mut seen = BTreeSet::new();
    for w in &want {
        match w {
            Wanted::Image {
                reference,
                platform,
                ..
            } => {
                if !seen.insert(format!("{reference} {platform}")) {
                    continue;
                }
                let prior = old_lock.image(&reference.to_string());
                let entry = match prior {
                    Some(e) if !update.image(reference) => match e.manifest(platform) {
                        Some(m) => LockedImage {
                            platforms: vec![kiln_lock::LockedPlatform {
                                platform: platform.normalized(),
                                manifest: *m,
                            }],
                            ..e.clone()
                        },
                        // a new platform of a kept entry: from the locked
                        // digest, not wherever the tag points now
                        None => kiln_worker::lock::image(
                            &store,
                            &settings,
                            reference,
                            Some(e.digest),
                            platform,
                        )
                        .into_diagnostic()
                        .wrap_err_with(|| format!("cannot lock `{reference}` for {platform}"))?,
                    },
                    _ => kiln_worker::lock::image(&store, &settings, reference, None, platform)
                        .into_diagnostic()
                        .wrap_err_with(|| format!("cannot lock `{reference}` for {platform}"))?,
                };
                new.put_image(entry);
            }
            Wanted::Packages { op, platform, .. } => {
                let id =
                    kiln_worker::packages::identity(op, platform, &context).into_diagnostic()?;
                if new.packages(&id).is_some() {
                    continue;
                }
                let entry = match old_lock.packages(&id) {
                    Some(e) if !update.packages(e) => e.clone(),
                    _ => kiln_worker::packages::lock(&store, op, platform, &context)
                        .into_diagnostic()
                        .wrap_err_with(|| {
                            format!("cannot lock the {} package set {:?}", id.suite, id.request)
                        })?,
                };
                new.put_packages(entry);
            }
        }
    }
    if let Some(names) = &args.update {
        for n in names {
            let r = Reference::parse(n).ok();
            let hit = r.as_ref().is_some_and(|r| {
                new.images.iter().any(|i| {
                    Reference::parse(&i.reference).is_ok_and(|x| {
                        Update(Some(vec![n.clone()])).image(&x) || x.name() == r.name()
                    })
                })
            }) || new
                .packages
                .iter()
                .any(|p| Update(Some(vec![n.clone()])).packages(p));
            if !hit {
                miette::bail!(miette::miette!(
                    help = "name an image as the build file writes it (`debian`, `debian:bookworm`) or a package of a set",
                    "`--update={n}`: the build file has no image or package `{n}`"
                ));
            }
        }
    }
    report_changes(&old_lock, &new);
    let text = new.render();
    if old.is_some() && std::fs::read_to_string(&lock_path).ok().as_deref() == Some(&text) {
        eprintln!("`{}` is up to date", lock_path.display());
        return Ok(ExitCode::SUCCESS);
    }
    write_atomic(&lock_path, &text)?;
    let debs: usize = new.packages.iter().map(|p| p.debs.len()).sum();
    eprintln!(
        "wrote `{}`: {} image(s), {} package set(s) ({debs} .deb files)",
        lock_path.display(),
        new.images.len(),
        new.packages.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// What changed, one line per entry, as a reviewer wants to read it.
fn report_changes(old: &Lockfile, new: &Lockfile) {
    for i in &new.images {
        match old.image(&i.reference) {
            None => eprintln!("  adding {} {}", i.reference, i.digest),
            Some(o) if o.digest != i.digest => {
                eprintln!("  updating {} {} -> {}", i.reference, o.digest, i.digest)
            }
            Some(_) => {}
        }
    }
    for o in &old.images {
        if new.image(&o.reference).is_none() {
            eprintln!("  removing {}", o.reference);
        }
    }
    for p in &new.packages {
        let what = format!(
            "{} {:?} ({})",
            p.set.suite, p.set.request, p.set.architecture
        );
        match old.packages(&p.set) {
            None => eprintln!("  adding {what}: {} .deb files", p.debs.len()),
            Some(o) => {
                for d in &p.debs {
                    match o.debs.iter().find(|x| x.name == d.name) {
                        Some(x) if x.version != d.version => {
                            eprintln!("  updating {} {} -> {}", d.name, x.version, d.version)
                        }
                        None => eprintln!("  adding {} {}", d.name, d.version),
                        _ => {}
                    }
                }
                for x in &o.debs {
                    if !p.debs.iter().any(|d| d.name == x.name) {
                        eprintln!("  removing {} {}", x.name, x.version);
                    }
                }
            }
        }
    }
    for o in &old.packages {
        if new.packages(&o.set).is_none() {
            eprintln!(
                "  removing {} {:?} ({})",
                o.set.suite, o.set.request, o.set.architecture
            );
        }
    }
}

/// Writes `text` to `path` through a temporary file in the same directory,
/// so a killed `kiln lock` never leaves half a lock.
fn write_atomic(path: &std::path::Path, text: &str) -> miette::Result<()> {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.into_diagnostic()
        .wrap_err_with(|| format!("cannot write `{}`", path.display()))
}
