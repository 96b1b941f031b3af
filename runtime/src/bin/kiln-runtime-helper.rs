//! The sandbox child entry for kiln-runtime's own tests and benchmarks:
//! `kiln-runtime-helper __sandbox-child` is the same code path as
//! `kiln __sandbox-child`. Two more modes serve bench/runtime.sh:
//!
//! - `run LOWER UPPER [--net none|isolated] [--wait-cleanup] [--helper EXE] -- ARGS...`:
//!   one sandbox, output passed through, its exit code returned; with
//!   `--wait-cleanup` it also waits until the sandbox's state directory is
//!   removed (the runtime returns before that, see `wait_for_cleanup`);
//!   `--helper` re-executes EXE (e.g. the kiln binary) as the sandbox child
//!   instead of this program; `--repeat N` runs it N times with one
//!   `Runtime`, as a build runs its steps, and prints each run's wall time
//!   (microseconds, start to return, with `--wait-cleanup` to the state
//!   directory's removal) to stderr as `run-us T`;
//! - `diff DIR`: DIR as an overlay upper directory, written as a layer tar
//!   to stdout.

// A test and benchmark binary: its usage, errors and timings go to stderr.
#![allow(clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

use kiln_runtime::{ExitStatus, Network, Runtime, SandboxSpec, Stream};

fn usage() -> ExitCode {
    eprintln!(
        "usage: kiln-runtime-helper {} | run LOWER UPPER [--net none|isolated] [--wait-cleanup] [--helper EXE] [--repeat N] -- ARGS... | diff DIR",
        kiln_runtime::CHILD_SUBCOMMAND
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(kiln_runtime::CHILD_SUBCOMMAND) => kiln_runtime::child_main(),
        Some("run") if args.len() >= 5 => {
            let Some(sep) = args.iter().position(|a| a == "--") else {
                return usage();
            };
            let mut spec = SandboxSpec::new(&args[2], args[sep + 1..].to_vec());
            spec.lowers = vec![args[1].clone().into()];
            if args[3..sep].iter().any(|a| a == "none") {
                spec.network = Network::None;
            }
            if args[3..sep].iter().any(|a| a == "isolated") {
                spec.network = Network::Isolated;
            }
            let wait_cleanup = args[3..sep].iter().any(|a| a == "--wait-cleanup");
            let exe = match args[3..sep].iter().position(|a| a == "--helper") {
                Some(i) if 3 + i + 1 < sep => std::path::PathBuf::from(&args[3 + i + 1]),
                Some(_) => return usage(),
                None => std::env::current_exe().expect("own path"),
            };
            let repeat = match args[3..sep].iter().position(|a| a == "--repeat") {
                Some(i) => match args.get(3 + i + 1).and_then(|n| n.parse::<u32>().ok()) {
                    Some(n) if n > 0 && 3 + i + 1 < sep => n,
                    _ => return usage(),
                },
                None => 1,
            };
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let runtime = Runtime::new(exe);
            let mut r = None;
            for _ in 0..repeat {
                let t = std::time::Instant::now();
                let ran = runtime.run(
                    &spec,
                    &mut |s, b| {
                        let _ = match s {
                            Stream::Stdout => out.write_all(b),
                            Stream::Stderr => err.write_all(b),
                        };
                    },
                    None,
                );
                if wait_cleanup {
                    kiln_runtime::wait_for_cleanup();
                }
                if repeat > 1 {
                    eprintln!("run-us {}", t.elapsed().as_micros());
                }
                let failed = !matches!(&ran, Ok(o) if o.success());
                r = Some(ran);
                if failed {
                    break;
                }
            }
            match r.expect("at least one run") {
                Ok(o) => match o.status {
                    ExitStatus::Code(c) => ExitCode::from(c as u8),
                    ExitStatus::Signal(s) => ExitCode::from(128 + s as u8),
                },
                Err(e) => {
                    eprintln!("kiln-runtime-helper: {e}");
                    ExitCode::from(125)
                }
            }
        }
        Some("diff") if args.len() == 2 => {
            let out = std::io::stdout().lock();
            let opts = kiln_layer::WriteOptions {
                overlay_whiteouts: true,
                source_date_epoch: Some(0),
                xattrs: true,
                id_map: None,
            };
            match kiln_layer::write_tar(std::path::Path::new(&args[1]), out, &opts) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("kiln-runtime-helper: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}
