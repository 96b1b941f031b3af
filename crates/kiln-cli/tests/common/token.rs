//! A token server for `docker-registry`'s `auth: token` (Debian ships
//! none): the distribution token protocol on 127.0.0.1, one user, JWTs
//! signed RS256 by the `openssl` command with a self-signed certificate the
//! registry trusts (`rootcertbundle`), the certificate in the `x5c` header.
//! It hands out a refresh token for `offline_token=true` and honours the
//! OAuth2 `refresh_token` grant (a form `POST`), as Docker Hub's does.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const ISSUER: &str = "kiln-test-issuer";
pub const SERVICE: &str = "kiln-test-registry";
const REFRESH: &str = "kiln-test-refresh-token";

/// One request the token server answered: method, path with query, form
/// body, whether it carried basic credentials.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    pub target: String,
    pub body: String,
    pub basic: bool,
}

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// The certificate the registry trusts.
    pub cert: PathBuf,
    pub log: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    /// Serves in a thread for the life of the process (the listener dies
    /// with the test binary).
    pub fn start(dir: &Path, user: &str, password: &str) -> Self {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let o = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=kiln-test-token"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl is installed");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der_b64: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let good = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let (log2, user) = (log.clone(), user.to_string());
        std::thread::spawn(move || {
            for sock in listener.incoming().flatten() {
                let _ = serve(sock, &key, &der_b64, &good, &user, &log2);
            }
        });
        Self { realm, cert, log }
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(
    sock: TcpStream,
    key: &Path,
    x5c: &str,
    good: &str,
    user: &str,
    log: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(sock.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    log.lock().unwrap().push(TokenRequest {
        method: method.clone(),
        target: target.clone(),
        body: body.clone(),
        basic: auth.as_deref().is_some_and(|a| a.starts_with("Basic ")),
    });
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params = |s: &str| -> Vec<(String, String)> {
        s.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (decode(k), decode(v)))
            .collect()
    };
    let (status, json) = if method == "POST" {
        let form = params(&body);
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if get("grant_type").as_deref() == Some("refresh_token")
            && get("refresh_token").as_deref() == Some(REFRESH)
        {
            let scopes: Vec<String> = get("scope")
                .unwrap_or_default()
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let jwt = sign(key, x5c, user, &scopes);
            (
                200,
                format!(r#"{{"access_token":"{jwt}","expires_in":300}}"#),
            )
        } else {
            (400, r#"{"error":"invalid_grant"}"#.to_string())
        }
    } else if auth.as_deref() != Some(good) {
        (
            401,
            r#"{"details":"incorrect username or password"}"#.to_string(),
        )
    } else {
        let q = params(query);
        let scopes: Vec<String> = q
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        let jwt = sign(key, x5c, user, &scopes);
        let offline = q.iter().any(|(k, v)| k == "offline_token" && v == "true");
        let refresh = if offline {
            format!(r#","refresh_token":"{REFRESH}""#)
        } else {
            String::new()
        };
        (
            200,
            format!(r#"{{"token":"{jwt}","expires_in":300{refresh}}}"#),
        )
    };
    let mut w = sock;
    write!(
        w,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )?;
    w.flush()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

/// A JWT granting `scopes` (`repository:NAME:ACTIONS`), RS256 by openssl.
fn sign(key: &Path, x5c: &str, user: &str, scopes: &[String]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut p = s.splitn(3, ':');
            let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({
                "type": t, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout))
}
