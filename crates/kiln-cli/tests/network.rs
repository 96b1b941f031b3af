//! `network("isolated")` end to end: the real binary, as root and as the
//! unprivileged `kilntest`, runs the step behind slirp4netns (its
//! resolv.conf, outbound to the host's own address, not the host's
//! loopback), and `kiln graph` shows the mode. No traffic leaves the
//! machine.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{Busybox, chown_kilntest};

/// The host's address on its default route (a UDP connect(2) sends nothing).
fn host_address() -> IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("this test needs a non-loopback IPv4 address with a route on the host");
    s.local_addr().unwrap().ip()
}

/// Answers "pong" to every connection until one says "stop" ([`stop`]);
/// returns how many others connected.
fn serve(ip: IpAddr) -> (u16, std::thread::JoinHandle<usize>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        let mut n = 0;
        // a minute at most, for a build of one step
        for _ in 0..3000 {
            if let Ok((mut s, _)) = l.accept() {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 5];
                let got = s.read(&mut buf).unwrap_or(0);
                if &buf[..got] == b"stop\n" {
                    return n;
                }
                n += 1;
                let _ = s.write_all(b"pong\n");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    (port, h)
}

fn stop(ip: IpAddr, port: u16, h: std::thread::JoinHandle<usize>) -> usize {
    let mut s = std::net::TcpStream::connect((ip, port)).unwrap();
    s.write_all(b"stop\n").unwrap();
    h.join().unwrap()
}

fn build_isolated(rootless: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // traversable by others: real root's sandbox reaches the store as an
    // unprivileged host ID (the runtime's `MapPlan::Root`)
    std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let home = d.join(if rootless { "home-kilntest" } else { "home" });
    let host = host_address();
    let (lo_port, lo) = serve("127.0.0.1".parse().unwrap());
    let (out_port, out) = serve(host);
    Busybox::new(&["sh", "cat", "nc", "echo"])
        .dir("tmp")
        .dir("etc")
        .write(&d.join("rootfs"));
    std::fs::create_dir(d.join("ctx")).unwrap();
    std::fs::write(
        d.join("ctx/Kilnfile"),
        format!(
            "let app = image(\"bb:1\").run(\"cat /etc/resolv.conf > /resolv; \
             echo ping | nc -w 5 {host} {out_port} > /out; \
             nc -w 2 10.0.2.2 {lo_port} </dev/null && echo reached > /lo; true\", \
             [network(\"isolated\")]);\n"
        ),
    )
    .unwrap();
    let kiln = |args: &[&str]| {
        let o = if rootless {
            common::kilntest_command(&home, d, args).output().unwrap()
        } else {
            common::kiln_command(&home, d, args).output().unwrap()
        };
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "kiln {args:?} (rootless: {rootless}):\n{err}"
        );
        String::from_utf8(o.stdout).unwrap()
    };
    if rootless {
        chown_kilntest(d);
    }
    kiln(&["import", "rootfs", "-t", "bb:1"]);
    let graph = kiln(&["graph", "ctx"]);
    assert!(graph.contains("network=isolated"), "{graph}");
    kiln(&["build", "ctx", "-o", "type=local,dest=out"]);
    let read = |p: &str| std::fs::read_to_string(Path::new(d).join("out").join(p));
    assert_eq!(read("resolv").unwrap(), "nameserver 10.0.2.3\n");
    assert_eq!(read("out").unwrap(), "pong\n");
    assert!(read("lo").is_err(), "the host's loopback was reached");
    assert_eq!(
        stop("127.0.0.1".parse().unwrap(), lo_port, lo),
        0,
        "nothing may reach the loopback listener"
    );
    assert_eq!(stop(host, out_port, out), 1);
}

#[test]
fn an_isolated_step_reaches_out_but_not_the_hosts_loopback() {
    build_isolated(true);
    build_isolated(false);
}
