//! The build file of `kiln build`, `kiln check` and `kiln graph`: a
//! Kilnfile or a Dockerfile, found and told apart here, compiled by its own
//! frontend to the same graph.

use std::path::{Path, PathBuf};

use kiln_frontend::{Compiled, Diagnostics, Options};

/// Which frontend reads the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Kilnfile,
    Dockerfile,
}

/// A build file read from disk.
#[derive(Debug, Clone)]
pub struct BuildFile {
    /// The path as given, as diagnostics show it.
    pub name: String,
    /// Where it was read from (its lock file is beside it).
    pub path: PathBuf,
    pub text: String,
    pub kind: Kind,
}

/// Errors before the build file can be compiled at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("cannot read build file `{path}`: {source}")]
    #[diagnostic(
        code(kiln::build_file),
        help(
            "pass the file with `-f FILE`, or a CONTEXT directory that contains a `Kilnfile` or a `Dockerfile`"
        )
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no `Kilnfile`, `Dockerfile` or `Containerfile` in `{context}`")]
    #[diagnostic(
        code(kiln::build_file),
        help("pass the build file with `-f FILE`, or run kiln in the directory that holds it")
    )]
    Missing { context: PathBuf },
    #[error("build file `{path}` is not valid UTF-8")]
    #[diagnostic(code(kiln::build_file), help("save the file as UTF-8 text"))]
    NotUtf8 { path: PathBuf },
    #[error("invalid build arg `{arg}`: the name is empty")]
    #[diagnostic(code(kiln::build_arg), help("write `--build-arg NAME=VALUE`"))]
    BuildArg { arg: String },
}

/// `-f FILE`, else the context's `Kilnfile`, else its `Dockerfile` or
/// `Containerfile`, as docker looks for them.
pub fn locate(file: Option<&Path>, context: &Path) -> Result<PathBuf, LoadError> {
    if let Some(f) = file {
        return Ok(f.to_path_buf());
    }
    // Keep `Kilnfile:1:2` rather than `./Kilnfile:1:2` in diagnostics.
    let at = |n: &str| {
        if context == Path::new(".") {
            PathBuf::from(n)
        } else {
            context.join(n)
        }
    };
    for n in [
        "Kilnfile",
        "Dockerfile",
        "Containerfile",
        "dockerfile",
        "containerfile",
    ] {
        let p = at(n);
        if p.is_file() {
            return Ok(p);
        }
    }
    if !context.is_dir() {
        // Say what is wrong with the path given, not that it lacks files.
        return Err(LoadError::Read {
            path: at("Kilnfile"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    Err(LoadError::Missing {
        context: context.to_path_buf(),
    })
}

/// Reads the build file and tells by its content which frontend reads it.
pub fn load(file: Option<&Path>, context: &Path) -> Result<BuildFile, LoadError> {
    let path = locate(file, context)?;
    let bytes = std::fs::read(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 { path: path.clone() })?;
    let kind = if kiln_dockerfile::looks_like_dockerfile(&text) {
        Kind::Dockerfile
    } else {
        Kind::Kilnfile
    };
    if kind == Kind::Dockerfile && file.is_none() {
        // Say so: the user may have expected a Kilnfile.
        eprintln!("reading the Dockerfile `{}`", path.display());
    }
    Ok(BuildFile {
        name: path.display().to_string(),
        path,
        text,
        kind,
    })
}

impl BuildFile {
    /// Compiles to the graph of one target. A Dockerfile asks `bases` what
    /// its `FROM` images set (their environment and working directory).
    pub fn compile(
        &self,
        opts: &Options,
        bases: &dyn kiln_dockerfile::BaseImages,
    ) -> Result<Compiled, Diagnostics> {
        match self.kind {
            Kind::Kilnfile => kiln_frontend::compile(&self.name, &self.text, opts),
            Kind::Dockerfile => kiln_dockerfile::compile(&self.name, &self.text, opts, bases),
        }
    }

    /// [`BuildFile::compile`] for a build or its graph: a Dockerfile's bases
    /// are read from the store (and the registry, under `pull`), which a
    /// Kilnfile never needs.
    pub fn compile_for_build(
        &self,
        opts: &Options,
        pull: kiln_worker::PullPolicy,
        named: &Named,
    ) -> miette::Result<Result<Compiled, Diagnostics>> {
        self.compile_locked(opts, pull, named, None)
    }

    /// [`BuildFile::compile_for_build`] with a Dockerfile's bases resolved
    /// as the lock pins them.
    pub fn compile_locked(
        &self,
        opts: &Options,
        pull: kiln_worker::PullPolicy,
        named: &Named,
        lock: Option<std::sync::Arc<kiln_lock::Lockfile>>,
    ) -> miette::Result<Result<Compiled, Diagnostics>> {
        Ok(match self.kind {
            Kind::Kilnfile => self.compile(opts, &kiln_dockerfile::NoBaseImages),
            Kind::Dockerfile => {
                let mut bases = StoreBases::open(opts.platform.as_ref(), pull)?;
                bases.named = named.clone();
                bases.lock = lock;
                self.compile(opts, &bases)
            }
        })
    }
}

/// `--build-context` stand-ins by normalized image name.
pub type Named = std::collections::BTreeMap<String, kiln_worker::named::NamedContext>;

/// Base image configs from the store, pulling manifest and config (never
/// layers) when the image is not there, as the build itself would; a
/// `--build-context` stand-in's config for the image it stands in for.
pub struct StoreBases {
    store: kiln_oci::Store,
    registry: kiln_registry::Settings,
    platform: kiln_dag::Platform,
    pull: kiln_worker::PullPolicy,
    named: Named,
    lock: Option<std::sync::Arc<kiln_lock::Lockfile>>,
}

impl StoreBases {
    /// The store and the registry settings as a build opens them, for
    /// images of `platform` (else this machine's).
    pub fn open(
        platform: Option<&kiln_dag::Platform>,
        pull: kiln_worker::PullPolicy,
    ) -> miette::Result<StoreBases> {
        Ok(StoreBases {
            store: super::images::open_store()?,
            registry: super::registry::settings()?,
            platform: platform.cloned().unwrap_or_else(kiln_dag::Platform::host),
            pull,
            named: Named::new(),
            lock: None,
        })
    }
}

impl kiln_dockerfile::BaseImages for StoreBases {
    fn config(
        &self,
        reference: &str,
        platform: &kiln_dag::Platform,
    ) -> Result<Option<kiln_dockerfile::BaseConfig>, String> {
        use kiln_worker::named::NamedContext;
        let lookup = kiln_worker::ImageLookup {
            store: &self.store,
            pull: self.pull,
            registry: &self.registry,
            platform: &self.platform,
            lock: self.lock.as_deref(),
        };
        let reference = match self.named.get(reference) {
            None => reference.to_string(),
            Some(NamedContext::Image(r)) => kiln_worker::named::normalized(r),
            // a directory's files have no config; a layout's is read as
            // the build will import it
            Some(NamedContext::Dir(_)) => return Ok(Some(Default::default())),
            Some(NamedContext::OciLayout { path, tag }) => {
                let img = kiln_oci::import_oci_layout(&self.store, path, tag.as_deref())
                    .map_err(|e| kiln_types::error_chain(&e))?;
                let c = img.config.config().clone().unwrap_or_default();
                return Ok(Some(kiln_dockerfile::BaseConfig {
                    env: c.env().clone().unwrap_or_default(),
                    workdir: c.working_dir().clone(),
                    user: c.user().clone(),
                    onbuild: Vec::new(),
                }));
            }
        };
        let (c, onbuild) = lookup
            .config(&reference, Some(platform))
            .map_err(|e| kiln_types::error_chain(&e))?;
        Ok(Some(kiln_dockerfile::BaseConfig {
            env: c.env().clone().unwrap_or_default(),
            workdir: c.working_dir().clone(),
            user: c.user().clone(),
            onbuild,
        }))
    }
}
