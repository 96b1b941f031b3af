//! What `kiln build` shows on stderr while it works.
//!
//! The solver's events go through a pure [`Model`] (events in, lines out) so
//! every mode is tested without a terminal; [`Printer`] writes those lines:
//! `plain` one line per event (logs, CI), `json` one object per event, and
//! `tty` an indicatif live area in the manner of BuildKit: a header, each
//! running step with its elapsed time and the tail of its output, and every
//! finished step collapsed to one permanent line above it.

mod line;
mod plain;

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_dag::Digest;
use kiln_solver::{Event, Stream};

use line::TermLine;
pub use plain::Plain;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `tty` when stderr is a terminal, else `plain`
    Auto,
    /// A live view of running steps with the tail of their output
    Tty,
    /// One line per event, for logs
    Plain,
    /// One JSON object per line (`rawjson`, buildx's name, is taken too)
    #[value(alias = "rawjson")]
    Json,
    /// No progress (`-q`): warnings and errors only (`none`, buildx's
    /// other name, is taken too)
    #[value(alias = "none")]
    Quiet,
}

impl Mode {
    /// `auto` made concrete for this process's stderr.
    pub fn resolve(self) -> Mode {
        use std::io::IsTerminal as _;
        match self {
            Mode::Auto => {
                let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
                if std::io::stderr().is_terminal() && !dumb {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
            m => m,
        }
    }
}

/// What a vertex is called and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepInfo {
    pub name: String,
    pub location: Option<String>,
}

/// Lines of output kept per running step in the live view.
pub const TAIL_LINES: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Running { since: Duration },
    Cached,
    Done { took: Duration },
    Failed { took: Duration },
}

#[derive(Debug)]
struct Step {
    name: String,
    location: Option<String>,
    state: State,
    tail: VecDeque<String>,
    /// stdout's and stderr's unfinished lines, as a terminal shows them
    lines: [TermLine; 2],
    /// the stream that wrote last, whose unfinished line the view shows
    last: usize,
}

/// Where a stream's unfinished line is kept.
fn stream_index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// The state of a build as its events arrive. Times are offsets from the
/// start of the build, passed in, so the model never reads a clock.
#[derive(Debug)]
pub struct Model {
    info: HashMap<Digest, StepInfo>,
    steps: Vec<Step>,
    index: HashMap<Digest, usize>,
    total: usize,
    tail_lines: usize,
}

impl Model {
    pub fn new(info: HashMap<Digest, StepInfo>, tail_lines: usize) -> Self {
        Model {
            total: info.len(),
            info,
            steps: Vec::new(),
            index: HashMap::new(),
            tail_lines,
        }
    }

    fn step(&mut self, d: &Digest, now: Duration) -> &mut Step {
        let i = match self.index.get(d) {
            Some(i) => *i,
            None => {
                let info = self.info.get(d);
                self.steps.push(Step {
                    name: info.map(|s| s.name.clone()).unwrap_or_else(|| d.short()),
                    location: info.and_then(|s| s.location.clone()),
                    state: State::Running { since: now },
                    tail: VecDeque::new(),
                    lines: Default::default(),
                    last: 0,
                });
                self.index.insert(*d, self.steps.len() - 1);
                self.steps.len() - 1
            }
        };
        &mut self.steps[i]
    }

    /// Applies one event at `now`; returns the permanent lines it produced
    /// (a step that finished collapses to one line).
    pub fn apply(&mut self, e: &Event, now: Duration) -> Vec<String> {
        let tail_lines = self.tail_lines;
        match e {
            Event::Started { vertex } => {
                self.step(vertex, now).state = State::Running { since: now };
                Vec::new()
            }
            Event::Cached { vertex } => {
                let s = self.step(vertex, now);
                s.state = State::Cached;
                vec![format!("=> CACHED {}", s.name)]
            }
            Event::Log {
                vertex,
                stream,
                data,
            } => {
                let s = self.step(vertex, now);
                push_output(s, *stream, data, tail_lines);
                Vec::new()
            }
            Event::Done { vertex, duration } => {
                let s = self.step(vertex, now);
                s.state = State::Done { took: *duration };
                vec![format!("=> {} {}", s.name, secs(*duration))]
            }
            Event::Failed { vertex, .. } => {
                let s = self.step(vertex, now);
                let took = match s.state {
                    State::Running { since } => now.saturating_sub(since),
                    _ => Duration::ZERO,
                };
                s.state = State::Failed { took };
                let at = s
                    .location
                    .as_ref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                vec![format!("=> ERROR {}{at} {}", s.name, secs(took))]
            }
        }
    }

    /// Steps that are finished, of all the build's steps.
    pub fn counts(&self) -> (usize, usize) {
        let done = self
            .steps
            .iter()
            .filter(|s| !matches!(s.state, State::Running { .. }))
            .count();
        (done, self.total)
    }

    /// The lines that end the view: steps still running when the build
    /// stopped (cancelled by another step's failure or Ctrl-C), then a
    /// summary.
    pub fn finish(&self, now: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let mut failed = false;
        for s in &self.steps {
            match s.state {
                State::Running { since } => out.push(format!(
                    "=> CANCELED {} {}",
                    s.name,
                    secs(now.saturating_sub(since))
                )),
                State::Failed { .. } => failed = true,
                State::Cached | State::Done { .. } => {}
            }
        }
        let (done, total) = self.counts();
        let how = if failed || !out.is_empty() {
            "failed"
        } else {
            "finished"
        };
        out.push(format!("[+] Building {} ({done}/{total}) {how}", secs(now)));
        out
    }

    /// The live area at `now`: a header, then every running step with its
    /// elapsed time and the tail of its output, each line cut to `width`.
    pub fn live(&self, now: Duration, width: usize) -> Vec<String> {
        let (done, total) = self.counts();
        let mut out = vec![format!("[+] Building {} ({done}/{total})", secs(now))];
        for s in &self.steps {
            let State::Running { since } = s.state else {
                continue;
            };
            out.push(right_align(
                &format!("=> {}", s.name),
                &secs(now.saturating_sub(since)),
                width,
            ));
            let current = s.lines[s.last].current();
            let partial = (!current.is_empty()).then_some(&current);
            let mut lines: Vec<&String> = s.tail.iter().chain(partial).collect();
            let skip = lines.len().saturating_sub(self.tail_lines);
            lines.drain(..skip);
            for l in lines {
                out.push(cut(&format!("   | {l}"), width));
            }
        }
        out
    }
}

/// Adds output bytes to a step's tail: complete lines are kept (at most
/// `keep`), each as a terminal would show it ([`TermLine`]).
fn push_output(s: &mut Step, stream: Stream, data: &[u8], keep: usize) {
    s.last = stream_index(stream);
    for line in s.lines[s.last].feed(data) {
        s.tail.push_back(line);
        while s.tail.len() > keep {
            s.tail.pop_front();
        }
    }
}

pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn right_align(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1);
    let left = cut(left, room);
    let pad = width.saturating_sub(left.chars().count() + right.chars().count());
    format!("{left}{}{right}", " ".repeat(pad.max(1)))
}

/// The `json` line of an event.
pub fn json_line(info: &HashMap<Digest, StepInfo>, e: &Event) -> String {
    let name = |d: &Digest| {
        info.get(d)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| d.short())
    };
    let location = |d: &Digest| info.get(d).and_then(|s| s.location.clone());
    let v = match e {
        Event::Cached { vertex } => serde_json::json!({
            "event": "cached", "vertex": vertex.to_string(), "name": name(vertex),
        }),
        Event::Started { vertex } => serde_json::json!({
            "event": "started", "vertex": vertex.to_string(), "name": name(vertex),
            "location": location(vertex),
        }),
        Event::Log {
            vertex,
            stream,
            data,
        } => serde_json::json!({
            "event": "log",
            "vertex": vertex.to_string(),
            "stream": match stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr" },
            "data": String::from_utf8_lossy(data),
        }),
        Event::Done { vertex, duration } => serde_json::json!({
            "event": "done", "vertex": vertex.to_string(), "name": name(vertex),
            "duration_ms": duration.as_millis() as u64,
        }),
        Event::Failed { vertex, error } => serde_json::json!({
            "event": "failed", "vertex": vertex.to_string(), "name": name(vertex),
            "location": location(vertex), "error": error,
        }),
    };
    v.to_string()
}

/// The live area while one is drawn, so log lines go above it.
static LIVE: std::sync::Mutex<Option<MultiProgress>> = std::sync::Mutex::new(None);

/// stderr for `tracing`: while the tty view is drawn, a log line is written
/// with the view suspended, so it is neither torn nor drawn over.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let live = LIVE.lock().ok().and_then(|g| g.clone());
        match live {
            Some(m) => m.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The `MakeWriter` for `tracing_subscriber`.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// Writes progress in one mode.
pub struct Printer {
    mode: Mode,
    model: Model,
    plain: Plain,
    start: Instant,
    tty: Option<Tty>,
}

struct Tty {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
}

impl Printer {
    /// `mode` must be resolved (not `auto`).
    pub fn new(mode: Mode, info: HashMap<Digest, StepInfo>) -> Self {
        let tty = (mode == Mode::Tty).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            if let Ok(mut live) = LIVE.lock() {
                *live = Some(multi.clone());
            }
            Tty {
                multi,
                bars: Vec::new(),
            }
        });
        Printer {
            mode,
            model: Model::new(info, TAIL_LINES),
            plain: Plain::default(),
            start: Instant::now(),
            tty,
        }
    }

    pub fn event(&mut self, e: &Event) {
        let now = self.start.elapsed();
        match self.mode {
            Mode::Json => {
                let line = json_line(&self.model.info, e);
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            }
            Mode::Plain | Mode::Auto => {
                let lines = self.plain.apply(&self.model.info, e, now);
                let mut err = std::io::stderr().lock();
                for l in lines {
                    let _ = writeln!(err, "{l}");
                }
            }
            Mode::Quiet => {}
            Mode::Tty => {
                let done = self.model.apply(e, now);
                if let Some(t) = &self.tty {
                    for l in done {
                        if t.multi.is_hidden() {
                            // `--progress tty` without a terminal: no live
                            // area, the permanent lines still go out.
                            eprintln!("{l}");
                        } else {
                            let _ = t.multi.println(l);
                        }
                    }
                }
                self.redraw();
            }
        }
    }

    /// Refreshes elapsed times in the live area.
    pub fn tick(&mut self) {
        if self.mode == Mode::Tty {
            self.redraw();
        }
    }

    fn redraw(&mut self) {
        let now = self.start.elapsed();
        let Some(t) = &mut self.tty else { return };
        if t.multi.is_hidden() {
            return;
        }
        let width = console_width();
        let lines = self.model.live(now, width);
        while t.bars.len() < lines.len() {
            let bar = t.multi.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
            t.bars.push(bar);
        }
        while t.bars.len() > lines.len() {
            if let Some(b) = t.bars.pop() {
                b.finish_and_clear();
                t.multi.remove(&b);
            }
        }
        for (bar, line) in t.bars.iter().zip(lines) {
            bar.set_message(line);
        }
    }

    /// Ends the live area, leaving a final summary line in tty mode.
    pub fn finish(&mut self) {
        let now = self.start.elapsed();
        if let Some(t) = &mut self.tty {
            for b in t.bars.drain(..) {
                b.finish_and_clear();
            }
            let _ = t.multi.clear();
            if let Ok(mut live) = LIVE.lock() {
                *live = None;
            }
            for l in self.model.finish(now) {
                eprintln!("{l}");
            }
        }
    }
}

fn console_width() -> usize {
    // indicatif's terminal is `console`'s: ask it for the stderr width.
    console::Term::stderr()
        .size_checked()
        .map(|(_, w)| usize::from(w))
        .filter(|w| *w >= 20)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn info() -> HashMap<Digest, StepInfo> {
        let mut m = HashMap::new();
        for (n, name, loc) in [
            (1, "app: static_base", Some("Kilnfile:2:11")),
            (2, "build: run \"make\"", Some("Kilnfile:5:6")),
            (3, "app: copy", Some("Kilnfile:3:6")),
        ] {
            m.insert(
                d(n),
                StepInfo {
                    name: name.into(),
                    location: loc.map(String::from),
                },
            );
        }
        m
    }

    fn log(n: u8, s: &str) -> Event {
        Event::Log {
            vertex: d(n),
            stream: Stream::Stdout,
            data: s.as_bytes().to_vec(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A build as the tty shows it: (time, event) in, the permanent lines
    /// and the live area after each event out.
    fn run(events: &[(u64, Event)], width: usize) -> String {
        let mut m = Model::new(info(), 3);
        let mut out = String::new();
        for (t, e) in events {
            for l in m.apply(e, ms(*t)) {
                out.push_str(&format!("print {l}\n"));
            }
            out.push_str(&format!("live @{t}ms:\n"));
            for l in m.live(ms(*t), width) {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }

    #[test]
    fn tty_frames() {
        let events = vec![
            (0, Event::Cached { vertex: d(1) }),
            (10, Event::Started { vertex: d(2) }),
            (200, log(2, "one\ntwo\nthr")),
            (300, log(2, "ee\nfour\nfive\n")),
            (400, log(2, "10%\r50%\r90%")),
            (
                1500,
                Event::Done {
                    vertex: d(2),
                    duration: ms(1490),
                },
            ),
            (1510, Event::Started { vertex: d(3) }),
            (
                1600,
                Event::Failed {
                    vertex: d(3),
                    error: "boom".into(),
                },
            ),
        ];
        insta::assert_snapshot!(run(&events, 40));
    }

    #[test]
    fn finish_marks_cancelled_steps_and_the_failure() {
        let mut m = Model::new(info(), 3);
        m.apply(&Event::Cached { vertex: d(1) }, ms(0));
        m.apply(&Event::Started { vertex: d(2) }, ms(100));
        assert_eq!(
            m.finish(ms(600)),
            [
                "=> CANCELED build: run \"make\" 0.5s",
                "[+] Building 0.6s (1/3) failed"
            ]
        );
        m.apply(
            &Event::Done {
                vertex: d(2),
                duration: ms(500),
            },
            ms(600),
        );
        assert_eq!(m.finish(ms(700)), ["[+] Building 0.7s (2/3) finished"]);
        m.apply(&Event::Started { vertex: d(3) }, ms(700));
        m.apply(
            &Event::Failed {
                vertex: d(3),
                error: "x".into(),
            },
            ms(800),
        );
        assert_eq!(m.finish(ms(800)), ["[+] Building 0.8s (3/3) failed"]);
    }

    #[test]
    fn long_lines_are_cut_to_the_width() {
        let mut m = Model::new(info(), 3);
        m.apply(&Event::Started { vertex: d(2) }, ms(0));
        m.apply(
            &log(2, &format!("{}\n\x1b[31mred\x1b[0m\tx\n", "y".repeat(100))),
            ms(5),
        );
        let live = m.live(ms(2000), 30);
        assert!(live.iter().all(|l| l.chars().count() <= 30), "{live:?}");
        assert_eq!(live[1], "=> build: run \"make\"      2.0s");
        assert_eq!(live[2], format!("   | {}…", "y".repeat(24)));
        // escape sequences are dropped, tabs expanded
        assert_eq!(live[3], "   | red     x");
    }

    #[test]
    fn plain_and_json() {
        let events = [
            Event::Cached { vertex: d(1) },
            Event::Started { vertex: d(2) },
            log(2, "a\nb\n"),
            Event::Done {
                vertex: d(2),
                duration: ms(1234),
            },
            Event::Started { vertex: d(3) },
            Event::Failed {
                vertex: d(3),
                error: "`x` exited with exit code 1".into(),
            },
        ];
        let i = info();
        let mut p = Plain::default();
        let plain: Vec<String> = events
            .iter()
            .enumerate()
            .flat_map(|(n, e)| p.apply(&i, e, ms(n as u64 * 100)))
            .collect();
        insta::assert_snapshot!(plain.join("\n"));
        let json: Vec<String> = events
            .iter()
            .map(|e| {
                json_line(&i, e)
                    .replace(&d(1).to_string(), "D1")
                    .replace(&d(2).to_string(), "D2")
                    .replace(&d(3).to_string(), "D3")
            })
            .collect();
        insta::assert_snapshot!(json.join("\n"));
    }

    /// Real output of a step (`tests/fixtures/progress/*.chunks`, made by
    /// `capture.sh`: the chunks kiln received), replayed as log events 10 ms
    /// apart, shown by every mode.
    fn replay(fixture: &str) -> (String, String, String) {
        let path = format!(
            "{}/tests/fixtures/progress/{fixture}.chunks",
            env!("CARGO_MANIFEST_DIR")
        );
        let chunks: Vec<Event> = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("`{path}`: {e}"))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                Event::Log {
                    vertex: d(2),
                    stream: if v["stream"] == "stdout" {
                        Stream::Stdout
                    } else {
                        Stream::Stderr
                    },
                    data: v["data"].as_str().unwrap().as_bytes().to_vec(),
                }
            })
            .collect();
        let mut events = vec![Event::Started { vertex: d(2) }];
        events.extend(chunks);
        events.push(Event::Done {
            vertex: d(2),
            duration: ms(10 * events.len() as u64),
        });
        let i = info();
        let (mut plain, mut tty, mut json) = (Vec::new(), Vec::new(), Vec::new());
        let mut p = Plain::default();
        let mut m = Model::new(info(), TAIL_LINES);
        let last = events.len() - 2;
        for (n, e) in events.iter().enumerate() {
            let now = ms(10 * n as u64);
            plain.extend(p.apply(&i, e, now));
            tty.extend(m.apply(e, now));
            // the live area once, just before the step ends
            if n == last {
                tty.push("-- live area before the step ends:".into());
                tty.extend(m.live(now, 100));
                tty.push("--".into());
            }
            json.push(json_line(&i, e).replace(&d(2).to_string(), "D2"));
        }
        (plain.join("\n"), tty.join("\n"), json.join("\n"))
    }

    #[test]
    fn real_outputs_in_every_mode() {
        for fixture in ["apt", "setx", "go", "cargo"] {
            let (plain, tty, json) = replay(fixture);
            // no line of a plain or tty view is empty because of `\r\n`, none
            // holds a control character or an escape sequence
            for l in plain.lines().chain(tty.lines()) {
                assert!(!l.chars().any(|c| c.is_control()), "{fixture}: {l:?}");
            }
            insta::assert_snapshot!(format!("{fixture}_plain"), plain);
            insta::assert_snapshot!(format!("{fixture}_tty"), tty);
            insta::assert_snapshot!(format!("{fixture}_json"), json);
        }
    }
}
