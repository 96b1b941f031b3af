//! `check_file FILE [N]`: checks a Dockerfile N times in one process, for
//! profiling the lowering without the CLI's start-up (bench/dockerfile.sh
//! times the real `kiln check`).
#![allow(clippy::print_stdout)] // prints its timing: it is a measuring tool

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: check_file FILE [N]");
    let n: usize = args.next().map_or(1, |s| s.parse().expect("N"));
    let src = std::fs::read_to_string(&path).expect("read");
    let opts = kiln_frontend::Options::default();
    let t = std::time::Instant::now();
    let mut errors = 0;
    for _ in 0..n {
        let d = kiln_dockerfile::check(&path, &src, &opts, &kiln_dockerfile::NoBaseImages);
        errors += d.errors().count();
    }
    println!(
        "{:.3} ms per check, {errors} errors",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
