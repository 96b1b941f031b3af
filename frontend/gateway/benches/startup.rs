//! Frontend start to its build `Solve` request, for go-hello: the time
//! BuildKit waits on kiln before it can start building. The frontend binary
//! runs against the same stand-in gateway as the protocol tests (answers are
//! immediate, so this is the frontend's own time: process start, HTTP/2 and
//! gRPC setup, loading and compiling the Kilnfile, resolving the base
//! config, emitting the LLB). Prints medians over 50 runs.

// A benchmark's report is its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use support::{Call, Fake, run_frontend};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/go-hello/Kilnfile"),
    )
    .expect("the go-hello example");
    let fake = Fake::new(&[("Kilnfile", &text)]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut to_solve, mut to_return) = (Vec::new(), Vec::new());
    for i in 0..55 {
        let run = rt.block_on(run_frontend(&fake, &["filename=Kilnfile"]));
        assert!(run.status.success(), "{}", run.stderr);
        let solves: Vec<_> = run
            .calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::Solve(_)))
            .map(|(t, _)| *t)
            .collect();
        let ret = run
            .calls
            .iter()
            .find(|(_, c)| matches!(c, Call::Return(_)))
            .map(|(t, _)| *t)
            .expect("a Return");
        if i < 5 {
            continue; // warm-up: page cache, binary loading
        }
        to_solve.push(solves[1] - run.started);
        to_return.push(ret - run.started);
    }
    let min = to_solve.iter().min().copied().unwrap();
    let max = to_solve.iter().max().copied().unwrap();
    println!(
        "frontend start -> build Solve (go-hello): median {:.2} ms (min {:.2}, max {:.2}, n={})",
        median(to_solve.clone()).as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        to_solve.len()
    );
    println!(
        "frontend start -> Return (go-hello): median {:.2} ms",
        median(to_return).as_secs_f64() * 1e3
    );
}
