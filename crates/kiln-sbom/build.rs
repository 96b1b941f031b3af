//! The static base is synthesized from crates compiled into kiln (the
//! Mozilla roots of `webpki-root-certs`); the SBOM names the version of the
//! roots it was built from, which only the lock file records.

fn main() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let version = locked_version(&text, "webpki-root-certs").unwrap_or("unknown");
    println!("cargo:rustc-env=KILN_SBOM_WEBPKI_ROOT_CERTS={version}");
}

/// `version = "..."` of the `[[package]]` named `name`.
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let want = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == want {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return v.strip_suffix('"');
        }
    }
    None
}
