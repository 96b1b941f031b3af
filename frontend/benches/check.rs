//! `cargo bench -p kiln-frontend`: median time of `check` and `compile` on
//! generated Kilnfiles of about 1k, 5k, 50k and 500k lines (the same shapes
//! as `bench/gen-kilnfile.py`: 10 lines a stage, each copying from the one
//! before; and `--chain`, one kept `.env`/`.label` binding per line), to
//! show the frontend's cost and that it grows linearly.

// A benchmark's report is its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use kiln_frontend::{Options, check, compile};

fn generate(stages: usize) -> String {
    let mut out = String::from("// generated for the frontend benchmark\n");
    for i in 0..stages {
        let src = if i == 0 {
            "context().path(\"input.txt\")".to_string()
        } else {
            format!("s{}.path(\"/out\")", i - 1)
        };
        out.push_str(&format!(
            "let s{i} = image(\"docker.io/library/debian:bookworm\")\n    .workdir(\"/work/{i}\")\n    .copy({src}, \"in\")\n    .env(\"STAGE\", \"{i}\")\n    .run(\"cat in > /out && echo {i} >> /out\")\n    .run([\"/bin/true\", \"{i}\"], [cache(\"/root/.cache\"), tmpfs(\"/tmp\")])\n    .mkdir(\"/data/{i}\")\n    .file(\"/data/{i}/stamp\", \"{i}\")\n    .label(\"stage\", \"{i}\");\n\n"
        ));
    }
    out
}

/// `bench/gen-kilnfile.py --chain LINES`.
fn chain(lines: usize) -> String {
    let mut out = String::from(
        "// generated for the frontend benchmark\nlet c0 = image(\"docker.io/library/debian:bookworm\");\n",
    );
    for i in 1..lines - 1 {
        let call = if i % 2 == 1 { "env" } else { "label" };
        out.push_str(&format!(
            "let c{i} = c{}.{call}(\"K{i}\", \"{i}\");\n",
            i - 1
        ));
    }
    out
}

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    let opts = Options::default();
    println!("| Kilnfile | lines | check (median) | compile (median) | per 1k lines |");
    println!("|---|---:|---:|---:|---:|");
    let cases = [100, 500, 5000, 50_000]
        .map(|n| (format!("{n} stages"), generate(n)))
        .into_iter()
        .chain([50_000, 500_000].map(|n| ("chain".to_string(), chain(n))));
    for (shape, src) in cases {
        let lines = src.lines().count();
        let runs = if lines < 10_000 {
            31
        } else if lines < 100_000 {
            11
        } else {
            5
        };
        let diags = check("Kilnfile", &src, &opts);
        assert!(!diags.has_errors(), "{}", diags.summary());
        let c = median(|| drop(check("Kilnfile", &src, &opts)), runs);
        let p = median(|| drop(kiln_frontend::parse(&src)), runs);
        eprintln!(
            "parse {shape}, {lines} lines: {:.2} ms",
            p.as_secs_f64() * 1e3
        );
        let k = median(|| drop(compile("Kilnfile", &src, &opts).unwrap()), runs);
        println!(
            "| {shape} | {lines} | {:.2} ms | {:.2} ms | {:.2} ms |",
            c.as_secs_f64() * 1e3,
            k.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e3 / (lines as f64 / 1000.0)
        );
    }
}
