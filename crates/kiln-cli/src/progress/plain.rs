//! `--progress plain`: lines for logs and CI, in BuildKit's manner. A step
//! gets a number when it starts (`#3 NAME`, the full name once); its output
//! follows as whole lines (`#3 0.412 TEXT`: the step's number, seconds
//! since it started, the line as a terminal would show it, so a
//! `\r`-rewritten line appears once, in its last state), and a line without
//! a newline is printed when the step ends. The lines that end a step stay
//! what scripts read: `=> NAME done 1.23s`, `=> NAME CACHED`,
//! `=> NAME ERROR (Kilnfile:L:C)`.

use std::collections::HashMap;
use std::time::Duration;

use kiln_dag::Digest;
use kiln_solver::Event;

use super::StepInfo;
use super::line::TermLine;

#[derive(Debug)]
struct Running {
    number: usize,
    since: Duration,
    /// stdout's and stderr's unfinished lines, apart: a line one stream
    /// left open is not continued by the other
    lines: [TermLine; 2],
}

/// The plain view's state: each running step's number, start and
/// unfinished line.
#[derive(Debug, Default)]
pub struct Plain {
    steps: HashMap<Digest, Running>,
    next: usize,
}

impl Plain {
    /// The lines of one event at `now` (an offset from the build's start).
    pub fn apply(
        &mut self,
        info: &HashMap<Digest, StepInfo>,
        e: &Event,
        now: Duration,
    ) -> Vec<String> {
        let name = |d: &Digest| {
            info.get(d)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| d.short())
        };
        match e {
            Event::Cached { vertex } => vec![format!("=> {} CACHED", name(vertex))],
            Event::Started { vertex } => {
                let number = self.number(vertex, now);
                vec![format!("#{number} {}", name(vertex))]
            }
            Event::Log {
                vertex,
                stream,
                data,
            } => {
                let step = self.running(vertex, now);
                let at = now.saturating_sub(step.since);
                let number = step.number;
                step.lines[super::stream_index(*stream)]
                    .feed(data)
                    .into_iter()
                    .map(|l| output_line(number, at, &l))
                    .collect()
            }
            Event::Done { vertex, duration } => {
                let mut out = self.end(vertex, now);
                out.push(format!(
                    "=> {} done {:.2}s",
                    name(vertex),
                    duration.as_secs_f64()
                ));
                out
            }
            Event::Failed { vertex, .. } => {
                let mut out = self.end(vertex, now);
                let at = info
                    .get(vertex)
                    .and_then(|s| s.location.clone())
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                // The details follow once, in the final error report.
                out.push(format!("=> {} ERROR{at}", name(vertex)));
                out
            }
        }
    }

    fn number(&mut self, d: &Digest, now: Duration) -> usize {
        self.running(d, now).number
    }

    fn running(&mut self, d: &Digest, now: Duration) -> &mut Running {
        let next = &mut self.next;
        self.steps.entry(*d).or_insert_with(|| {
            *next += 1;
            Running {
                number: *next,
                since: now,
                lines: [TermLine::replacing(), TermLine::replacing()],
            }
        })
    }

    /// The unfinished line of a step that ended, if any.
    fn end(&mut self, d: &Digest, now: Duration) -> Vec<String> {
        let Some(mut step) = self.steps.remove(d) else {
            return Vec::new();
        };
        let at = now.saturating_sub(step.since);
        step.lines
            .iter_mut()
            .filter_map(|l| l.flush())
            .map(|l| output_line(step.number, at, &l))
            .collect()
    }
}

fn output_line(number: usize, at: Duration, line: &str) -> String {
    if line.is_empty() {
        format!("#{number} {:.3}", at.as_secs_f64())
    } else {
        format!("#{number} {:.3} {line}", at.as_secs_f64())
    }
}
