//! The isolated network (slirp4netns): out of reach of the host's loopback
//! listeners and abstract unix sockets, outbound TCP through slirp's NAT,
//! its own resolv.conf and hosts, and slirp4netns gone after every step.
//! Every test runs as root and again as `kilntest`. No traffic leaves the
//! machine: "outbound" is a listener on the host's own non-loopback address.

mod common;

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{World, layer_entries, rerun_as, run, runtime};
use kiln_runtime::{DriverChoice, ExitStatus, Network};

/// The host's address on its default route. A UDP connect(2) only picks the
/// route and the source address (udp(7)): nothing is sent.
fn host_address() -> IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("this test needs a non-loopback IPv4 address with a route on the host");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

fn listener(ip: IpAddr) -> (TcpListener, u16) {
    common::listener(ip)
}

fn accept_in_background(l: TcpListener) -> std::thread::JoinHandle<Option<String>> {
    common::accept_in_background(l, Duration::from_secs(8))
}

/// Held by each test: [`slirp_children`] sees the other test's too.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Children of this process that run slirp4netns.
fn slirp_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, the last `)` ends it
        let Some((comm, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1);
        if comm.ends_with("(slirp4netns") && ppid == Some(me.as_str()) {
            found.push(stat);
        }
    }
    found
}

#[test]
fn isolated_reaches_out_but_not_the_hosts_loopback_or_abstract_sockets() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new();
    let host = host_address();
    let (lo, lo_port) = listener("127.0.0.1".parse().unwrap());
    let (out, out_port) = listener(host);
    let token = format!("kiln-net-test-{}", std::process::id());
    let abs = UnixListener::bind_addr(&SocketAddr::from_abstract_name(&token).unwrap()).unwrap();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    // each probe prints one line; a failed connect must not end the script
    let script = format!(
        "nc -w 2 127.0.0.1 {lo_port} </dev/null && echo loopback-reached; \
         nc -w 2 10.0.2.2 {lo_port} </dev/null && echo host-alias-reached; \
         echo ping | nc -w 5 {host} {out_port} || echo outbound-failed; \
         echo abstract $(grep -c '@{token}' /proc/net/unix); \
         echo ns $(readlink /proc/self/ns/net); \
         ip -4 -o addr show tap0 | grep -o 'inet [0-9./]*'; \
         ip -o link show lo | grep -o ',UP'; \
         id -u; cat /etc/resolv.conf /etc/hosts"
    );
    let mut spec = w.spec(&script);
    spec.network = Network::Isolated;
    // the generated files must be readable by a step that is not root
    spec.user = Some("nonroot".into());
    spec.hostname = "builder".into();
    let acc_lo = accept_in_background(lo.try_clone().unwrap());
    let acc_out = accept_in_background(out.try_clone().unwrap());
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{:?} {}", r.outcome, r.stderr);
    assert!(
        acc_lo.join().unwrap().is_none(),
        "nothing may reach the host's loopback listener: {}",
        r.stdout
    );
    assert_eq!(
        acc_out.join().unwrap().as_deref(),
        Some("ping\n"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.stdout,
        format!(
            "pong\n\
             abstract 0\n\
             ns {ns}\n\
             inet 10.0.2.100/24\n\
             ,UP\n\
             65532\n\
             nameserver 10.0.2.3\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             10.0.2.100\tbuilder\n",
            ns = step_ns(&r.stdout),
        )
    );
    assert_ne!(
        step_ns(&r.stdout),
        host_ns.to_string_lossy(),
        "the step has a network namespace of its own"
    );
    // neither the mount targets of /etc/resolv.conf and /etc/hosts nor
    // anything else is a change of the step
    assert_eq!(layer_entries(&w.upper, &r.outcome), []);
    assert_eq!(slirp_children(), Vec::<String>::new());

    // the control: with the host's network the same probes do reach both
    let mut spec = w.spec(&format!(
        "echo ping | nc -w 5 127.0.0.1 {lo_port}; echo abstract $(grep -c '@{token}' /proc/net/unix)"
    ));
    spec.network = Network::Host;
    let acc_lo = accept_in_background(lo);
    let r = run(&spec).unwrap();
    assert!(r.outcome.success(), "{}", r.stderr);
    assert_eq!(acc_lo.join().unwrap().as_deref(), Some("ping\n"));
    assert_eq!(r.stdout, "pong\nabstract 1\n");
    drop((abs, out));
    rerun_as(
        "kilntest",
        "isolated_reaches_out_but_not_the_hosts_loopback_or_abstract_sockets",
    );
}

fn step_ns(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("ns "))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn slirp4netns_ends_with_the_step_on_every_path() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new();
    // the step's exit code, whatever it is
    let mut spec = w.spec("ip -o link show tap0 >/dev/null && exit 3");
    spec.network = Network::Isolated;
    let r = run(&spec).unwrap();
    assert_eq!(r.outcome.status, ExitStatus::Code(3), "{}", r.stderr);
    assert_eq!(slirp_children(), Vec::<String>::new());

    // timeout
    let mut spec = w.spec("sleep 100");
    spec.network = Network::Isolated;
    spec.timeout = Some(Duration::from_millis(700));
    let r = run(&spec).unwrap();
    assert!(r.outcome.timed_out);
    assert_eq!(slirp_children(), Vec::<String>::new());

    // cancel, while the step runs (slirp4netns is running then)
    let cancel = AtomicBool::new(false);
    let mut spec = w.spec("echo started; sleep 100");
    spec.network = Network::Isolated;
    let during = std::thread::scope(|s| {
        let during = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            let during = slirp_children().len();
            cancel.store(true, Ordering::Relaxed);
            during
        });
        let o = runtime().run(&spec, &mut |_, _| {}, Some(&cancel)).unwrap();
        assert!(o.cancelled);
        during.join().unwrap()
    });
    assert_eq!(during, 1, "slirp4netns runs during the step");
    assert_eq!(slirp_children(), Vec::<String>::new());

    // a step that cannot start (no such program)
    let mut spec = w.spec("");
    spec.args = vec!["/no/such/program".into()];
    spec.network = Network::Isolated;
    assert!(run(&spec).is_err());
    assert_eq!(slirp_children(), Vec::<String>::new());

    // the copying driver and fuse-overlayfs have no mount-target layer: the
    // stubs they make for /etc/resolv.conf and /etc/hosts are removed from
    // the upper too
    for driver in [DriverChoice::Copy, DriverChoice::FuseOverlayfs] {
        let mut spec = w.spec("cat /etc/resolv.conf");
        spec.network = Network::Isolated;
        spec.driver = driver;
        let r = run(&spec).unwrap();
        assert!(r.outcome.success(), "{driver:?}: {}", r.stderr);
        assert_eq!(r.stdout, "nameserver 10.0.2.3\n", "{driver:?}");
        assert_eq!(layer_entries(&w.upper, &r.outcome), [], "{driver:?}");
    }
    kiln_runtime::wait_for_cleanup();
    rerun_as("kilntest", "slirp4netns_ends_with_the_step_on_every_path");
}
