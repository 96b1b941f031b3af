//! Registry access as docker and podman have it, end to end: `kiln login`
//! and `kiln logout` against Debian's `docker-registry` with htpasswd
//! (basic) auth, a real `docker-credential-*` helper (a shell script that
//! speaks the protocol), containers' `auth.json`, `registries.conf`
//! mirrors, the registry's error codes as sentences with a `help:`, and a
//! name that does not resolve failing at once. The password never shows in
//! output, logs, the store or an image.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use common::Registry;

const USER: &str = "erin";
const PASSWORD: &str = "Kiln-S3cret-pw-71";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// kiln with HOME, KILN_HOME and every credential/mirror variable of
    /// its own; `bin` first on PATH (for credential helpers).
    fn kiln(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.path("home"))
            .env("KILN_HOME", self.path("home/kiln"))
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .env("KILN_LOG", "trace")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CONTAINERS_REGISTRIES_CONF")
            .env_remove("KILN_REGISTRY_MIRROR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.kiln(args).output().unwrap()
    }

    /// `kiln login` with the password on stdin.
    fn login(&self, server: &str, password: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .kiln(&["login", server, "-u", USER, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }

    fn docker_config(&self) -> PathBuf {
        self.path("home/.docker/config.json")
    }

    /// A `docker-credential-NAME` script in `bin`.
    fn helper(&self, name: &str, script: &str) {
        std::fs::create_dir_all(self.path("bin")).unwrap();
        let p = self.path(&format!("bin/docker-credential-{name}"));
        std::fs::write(&p, script).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "kiln failed: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// miette wraps long lines: compare words.
fn words(s: &str) -> String {
    s.replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The password, and its base64 forms, nowhere in `bytes`.
fn assert_no_secret(what: &str, bytes: &[u8]) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for needle in [PASSWORD.as_bytes(), b64.as_bytes()] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the password is in {what}"
        );
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// The protocol as docker-credential-helpers speak it, with a directory
/// of files as the keychain (`KILNTEST_KEYCHAIN`).
const FILE_HELPER: &str = r#"#!/bin/sh
set -eu
store="${KILNTEST_KEYCHAIN:?}"
mkdir -p "$store"
case "$1" in
get)
  server=$(cat)
  f="$store/$(printf %s "$server" | od -An -tx1 | tr -d ' \n')"
  if [ -f "$f" ]; then cat "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
store)
  json=$(cat)
  server=$(printf %s "$json" | sed 's/.*"ServerURL":"\([^"]*\)".*/\1/')
  printf %s "$json" > "$store/$(printf %s "$server" | od -An -tx1 | tr -d ' \n')" ;;
erase)
  server=$(cat)
  f="$store/$(printf %s "$server" | od -An -tx1 | tr -d ' \n')"
  if [ -f "$f" ]; then rm "$f"; else echo "credentials not found in native keychain"; exit 1; fi ;;
*) echo "unknown action $1" >&2; exit 2 ;;
esac
"#;

#[test]
fn login_push_pull_logout_with_htpasswd() {
    let reg = Registry::with_htpasswd(USER, PASSWORD);
    let env = Env::new();
    let dest = format!("{}/prot/static:1", reg.addr);

    // No credentials: the error says how to log in.
    let o = env.run(&["pull", &dest]);
    assert!(!o.status.success());
    let w = words(&text(&o));
    assert!(w.contains("authentication required"), "{w}");
    assert!(w.contains(&format!("kiln login {}", reg.addr)), "{w}");

    // A wrong password: refused, nothing written.
    let o = env.login(&reg.addr, "not-the-password");
    assert!(!o.status.success());
    let w = words(&text(&o));
    assert!(w.contains("rejected the credentials"), "{w}");
    assert!(!w.contains("not-the-password"), "{w}");
    assert!(!env.docker_config().exists());

    // The right one: docker's config.json, base64 in `auths`, 0600.
    let o = env.login(&reg.addr, PASSWORD);
    assert_eq!(ok(o), "Login Succeeded");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.docker_config()).unwrap()).unwrap();
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert_eq!(cfg["auths"][&reg.addr]["auth"], want.as_str(), "{cfg}");
    let mode = std::fs::metadata(env.docker_config())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Push a protected image, pull it into a fresh store, build on it
    // with provenance: all with the stored credentials, none of which
    // shows anywhere.
    let mut outputs = Vec::new();
    let o = env.run(&[
        "base",
        "static",
        "-o",
        &format!("type=registry,name={dest}"),
    ]);
    outputs.push(text(&o));
    ok(o);
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let o = env.run(&["pull", &dest]);
    outputs.push(text(&o));
    let digest = ok(o);
    assert!(digest.starts_with("sha256:"), "{digest}");
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        format!("let app = image(\"{dest}\").env(\"A\", \"1\");\n"),
    )
    .unwrap();
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let o = env
        .kiln(&[
            "build",
            "--progress",
            "plain",
            "--provenance=mode=max",
            "-o",
            &format!("type=oci,dest={}", env.path("app.tar").display()),
            "ctx",
        ])
        .output()
        .unwrap();
    outputs.push(text(&o));
    ok(o);
    assert!(
        outputs.iter().all(|o| o.contains("TRACE")),
        "the commands ran with trace logs"
    );
    for (i, out) in outputs.iter().enumerate() {
        assert_no_secret(&format!("the output of command {i}"), out.as_bytes());
    }
    let mut files = vec![env.path("app.tar")];
    files_under(&env.path("home/kiln"), &mut files);
    assert!(files.len() > 3, "{files:?}");
    for f in files {
        assert_no_secret(&f.display().to_string(), &std::fs::read(&f).unwrap());
    }

    // A digest the repository does not have: the registry's code as a
    // sentence, a help line, and no raw JSON.
    let wrong = format!("{}/prot/static@sha256:{}", reg.addr, "1".repeat(64));
    let o = env.run(&["pull", &wrong]);
    assert!(!o.status.success());
    let w = words(&text(&o));
    assert!(
        w.contains(&format!(
            "of `{}/prot/static` is not in this repository (MANIFEST_UNKNOWN",
            reg.addr
        )),
        "{w}"
    );
    assert!(
        w.contains("help: the repository has no manifest by this tag or digest"),
        "{w}"
    );
    assert!(!w.contains("{\"errors\""), "{w}");

    // Logout removes the entry; pulling needs a login again.
    assert_eq!(
        ok(env.run(&["logout", &reg.addr])),
        format!("Removing login credentials for {}", reg.addr)
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.docker_config()).unwrap()).unwrap();
    assert!(cfg["auths"].get(&reg.addr).is_none(), "{cfg}");
    assert_eq!(
        ok(env.run(&["logout", &reg.addr])),
        format!("Not logged in to {}", reg.addr)
    );
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let o = env.run(&["pull", &dest]);
    assert!(!o.status.success());
    assert!(words(&text(&o)).contains("authentication required"));

    // `-p` works, with docker's warning.
    let o = env.run(&["login", &reg.addr, "-u", USER, "-p", PASSWORD]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("WARNING! Using --password via the CLI is insecure. Use --password-stdin."),
        "{out}"
    );
}

#[test]
fn credential_helpers_and_containers_auth_files() {
    let reg = Registry::with_htpasswd(USER, PASSWORD);
    let env = Env::new();
    let dest = format!("{}/helped/static:1", reg.addr);
    env.helper("kilntest", FILE_HELPER);
    std::fs::create_dir_all(env.path("home/.docker")).unwrap();
    std::fs::write(env.docker_config(), r#"{"credsStore": "kilntest"}"#).unwrap();
    let keychain = env.path("keychain");
    let run = |args: &[&str]| {
        env.kiln(args)
            .env("KILNTEST_KEYCHAIN", &keychain)
            .output()
            .unwrap()
    };

    // login hands the credentials to the helper, not to the file
    let o = env
        .kiln(&["login", &reg.addr, "-u", USER, "--password-stdin"])
        .env("KILNTEST_KEYCHAIN", &keychain)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(PASSWORD.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("stored by `docker-credential-kilntest`"),
        "{out}"
    );
    let cfg = std::fs::read_to_string(env.docker_config()).unwrap();
    assert!(!cfg.contains("auths"), "{cfg}");
    assert_eq!(std::fs::read_dir(&keychain).unwrap().count(), 1);

    // push and pull get them from the helper (`get`)
    ok(run(&[
        "base",
        "static",
        "-o",
        &format!("type=registry,name={dest}"),
    ]));
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    ok(run(&["pull", &dest]));

    // logout erases them from the helper
    assert_eq!(
        ok(run(&["logout", &reg.addr])),
        format!("Removing login credentials for {}", reg.addr)
    );
    assert_eq!(std::fs::read_dir(&keychain).unwrap().count(), 0);

    // A helper that fails: its name and its message, and what to do.
    env.helper(
        "broken",
        "#!/bin/sh\ncat >/dev/null\necho 'keychain locked: boom' >&2\nexit 3\n",
    );
    std::fs::write(
        env.docker_config(),
        format!(r#"{{"credHelpers": {{"{}": "broken"}}}}"#, reg.addr),
    )
    .unwrap();
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let o = run(&["pull", &dest]);
    assert!(!o.status.success());
    let w = words(&text(&o));
    assert!(
        w.contains("credential helper `docker-credential-broken` failed to get credentials")
            && w.contains("keychain locked: boom"),
        "{w}"
    );
    assert!(
        w.contains("help: fix or install the credential helper"),
        "{w}"
    );

    // A helper that is not installed (here in containers' auth.json,
    // read first): a warning, and the next file's credentials serve.
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let xdg = env.path("home/.config/containers");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(
        xdg.join("auth.json"),
        format!(r#"{{"credHelpers": {{"{}": "not-installed"}}}}"#, reg.addr),
    )
    .unwrap();
    let broken_cfg = std::fs::read(env.docker_config()).unwrap();
    std::fs::write(
        env.docker_config(),
        format!(r#"{{"auths": {{"{}": {{"auth": "{b64}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let o = run(&["pull", &dest]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("credential helper `docker-credential-not-installed`")
            && out.contains("is not installed"),
        "{out}"
    );
    assert_eq!(
        out.matches("is not installed").count(),
        1,
        "one warning: {out}"
    );
    std::fs::remove_file(xdg.join("auth.json")).unwrap();
    std::fs::write(env.docker_config(), broken_cfg).unwrap();

    // containers' auth.json comes before docker's config.json (podman's
    // order): its right password wins over the broken helper.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let xdg = env.path("home/.config/containers");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(
        xdg.join("auth.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    ok(run(&["pull", &dest]));
    // $REGISTRY_AUTH_FILE alone, when set: here a file without the entry.
    std::fs::write(env.path("empty.json"), "{}").unwrap();
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let o = env
        .kiln(&["pull", &dest])
        .env("REGISTRY_AUTH_FILE", env.path("empty.json"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(words(&text(&o)).contains("authentication required"));
}

#[test]
fn unresolvable_registry_fails_at_once_with_a_mirror_hint() {
    let env = Env::new();
    let o = env.run(&["pull", "registry.kiln-test.invalid/app:1"]);
    assert!(!o.status.success());
    let w = words(&text(&o));
    assert!(
        w.contains("cannot resolve the registry host `registry.kiln-test.invalid`"),
        "{w}"
    );
    assert!(w.contains("--registry-mirror REGISTRY=MIRROR"), "{w}");
    assert!(
        !w.contains("retrying"),
        "no retries of a name that does not resolve: {w}"
    );

    // The same for a build's base image, at its Kilnfile line.
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        "let app = image(\"registry.kiln-test.invalid/app:1\").env(\"A\", \"1\");\n",
    )
    .unwrap();
    let o = env.run(&["build", "--progress", "plain", "ctx"]);
    assert!(!o.status.success());
    let w = words(&text(&o));
    assert!(
        w.contains("cannot resolve the registry host `registry.kiln-test.invalid`"),
        "{w}"
    );
    assert!(w.contains("ctx/Kilnfile:1"), "{w}");
    assert!(
        w.contains("help: the name `registry.kiln-test.invalid` does not resolve"),
        "{w}"
    );
    assert!(!w.contains("retrying"), "{w}");
}

#[test]
fn registries_conf_mirrors_and_flags_win() {
    let reg = Registry::start();
    let env = Env::new();
    // seed docker.io/library/busybox:1 on the loopback registry
    let o = env.run(&[
        "base",
        "static",
        "-o",
        &format!("type=registry,name={}/library/busybox:1", reg.addr),
    ]);
    ok(o);
    let conf = env.path("home/.config/containers/registries.conf");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let digest = ok(env.run(&["pull", "busybox:1"]));
    assert!(digest.starts_with("sha256:"));

    // A flag for docker.io replaces the file's mirror: the file now names
    // one that cannot resolve, and it is not tried.
    std::fs::write(
        &conf,
        "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"mirror.kiln-test.invalid\"\n",
    )
    .unwrap();
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let o = env.run(&[
        "pull",
        "--registry-mirror",
        &format!("docker.io={}", reg.addr),
        "busybox:1",
    ]);
    let out = text(&o);
    assert_eq!(ok(o), digest);
    assert!(!out.contains("mirror.kiln-test.invalid"), "{out}");

    // A broken file is named.
    std::fs::write(&conf, "[[registry]\n").unwrap();
    let o = env.run(&["pull", "busybox:1"]);
    assert!(!o.status.success());
    assert!(words(&text(&o)).contains(&format!("`{}`", conf.display())));
}

/// `docker-registry` with `auth: token` (its JWTs checked against the
/// token server's certificate): `kiln login` gets a refresh token and
/// keeps it as `identitytoken` (no password in the file), push and pull ask
/// for access tokens with the OAuth2 `refresh_token` grant.
#[test]
fn token_auth_with_an_identity_token() {
    let reg = Registry::with_token_auth(USER, PASSWORD);
    let env = Env::new();
    let dest = format!("{}/tok/static:1", reg.addr);
    let token = reg.token.as_ref().unwrap();

    let o = env.run(&["pull", &dest]);
    assert!(!o.status.success());
    assert!(
        words(&text(&o)).contains(&format!("kiln login {}", reg.addr)),
        "{}",
        text(&o)
    );

    let o = env.login(&reg.addr, "wrong-password");
    assert!(!o.status.success());
    assert!(
        words(&text(&o)).contains("rejected the credentials"),
        "{}",
        text(&o)
    );

    assert_eq!(ok(env.login(&reg.addr, PASSWORD)), "Login Succeeded");
    let cfg = std::fs::read_to_string(env.docker_config()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let entry = &doc["auths"][&reg.addr];
    assert!(
        entry["identitytoken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{cfg}"
    );
    assert_no_secret("the config file", cfg.as_bytes());
    let logins = token.requests().len();

    ok(env.run(&[
        "base",
        "static",
        "-o",
        &format!("type=registry,name={dest}"),
    ]));
    std::fs::remove_dir_all(env.path("home/kiln")).unwrap();
    let digest = ok(env.run(&["pull", &dest]));
    assert!(digest.starts_with("sha256:"), "{digest}");
    let after: Vec<_> = token.requests().into_iter().skip(logins).collect();
    assert!(!after.is_empty());
    assert!(
        after
            .iter()
            .all(|q| q.method == "POST" && !q.basic && q.body.contains("grant_type=refresh_token")),
        "only the refresh_token grant after login: {after:?}"
    );
    assert!(
        after.iter().any(|q| q.body.contains("push")),
        "the push asked for push access: {after:?}"
    );

    assert_eq!(
        ok(env.run(&["logout", &reg.addr])),
        format!("Removing login credentials for {}", reg.addr)
    );
}

/// The same as the unprivileged `kilntest`: login writes its own
/// `~/.docker/config.json` (0600, its owner), a build pulls the protected
/// base with it, logout removes it.
#[test]
fn rootless_login_and_build() {
    use std::os::unix::fs::MetadataExt as _;
    // setpriv needs root; CI runs as root (`/proc/self` belongs to the euid)
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return;
    }
    let reg = Registry::with_htpasswd(USER, PASSWORD);
    let env = Env::new();
    let dest = format!("{}/rootless/static:1", reg.addr);
    ok(env.run(&["login", &reg.addr, "-u", USER, "-p", PASSWORD]));
    ok(env.run(&[
        "base",
        "static",
        "-o",
        &format!("type=registry,name={dest}"),
    ]));
    std::fs::create_dir_all(env.path("ctx")).unwrap();
    std::fs::write(
        env.path("ctx/Kilnfile"),
        format!("let app = image(\"{dest}\").env(\"A\", \"1\");\n"),
    )
    .unwrap();
    let home = env.path("kilntest-home");
    std::fs::create_dir_all(&home).unwrap();
    common::chown_kilntest(env.dir.path());
    let as_kilntest = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut c = common::kilntest_command(&home, env.dir.path(), args);
        c.env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CONTAINERS_REGISTRIES_CONF")
            .env_remove("KILN_REGISTRY_MIRROR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(s) = stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let o = as_kilntest(&["build", "--progress", "plain", "ctx"], None);
    assert!(!o.status.success());
    assert!(
        words(&text(&o)).contains(&format!("kiln login {}", reg.addr)),
        "{}",
        text(&o)
    );

    let o = as_kilntest(
        &["login", &reg.addr, "-u", USER, "--password-stdin"],
        Some(PASSWORD),
    );
    assert_eq!(ok(o), "Login Succeeded");
    let cfg = home.join(".docker/config.json");
    let meta = std::fs::metadata(&cfg).unwrap();
    let uid: u32 = String::from_utf8(
        Command::new("id")
            .args(["-u", "kilntest"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    let o = as_kilntest(&["build", "--progress", "plain", "ctx"], None);
    assert!(o.status.success(), "{}", text(&o));
    assert_no_secret("the rootless build's output", text(&o).as_bytes());
    assert_eq!(
        ok(as_kilntest(&["logout", &reg.addr], None)),
        format!("Removing login credentials for {}", reg.addr)
    );
}
