//! Showing a run to people: a live view of jobs and steps on a terminal, prefixed log lines
//! otherwise, and at the end a summary table, the step summaries and where the log is.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use exec::engine::{RunEvent, RunReport, Status};
use exec::process::Stream;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;

use crate::Format;

/// Lines of a failed step shown again at the end on a terminal.
const TAIL_LINES: usize = 25;

/// How long the renderer lets events gather after writing a batch: short enough to look live,
/// long enough that a busy run does not wake it (and preempt a worker) for every line.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// The pause is taken in this many slices, each ending with a look at how full the channel is.
const PAUSE_SLICES: u32 = 4;

pub struct Renderer {
    live: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    steps: HashMap<String, Vec<String>>,
    /// Last lines of each (job, step), for showing failures again.
    tails: HashMap<(String, usize), std::collections::VecDeque<String>>,
    /// The run's log on disk: every job's lines, each prefixed with its job (`[build] …`).
    log_path: PathBuf,
    log: std::io::BufWriter<std::fs::File>,
    to_stderr: bool,
    /// Plain lines wait here until the events at hand are rendered: one write, not one per line.
    out: String,
}

impl Renderer {
    /// `log_path` is the run's log file, created here.
    pub fn new(format: Format, workflow: &str, event: &str, log_path: &Path) -> Renderer {
        let live =
            format == Format::Text && std::io::stderr().is_terminal() && std::env::var_os("TANDEM_NO_LIVE").is_none();
        let header = format!("▶ {workflow} (on {event})");
        if format == Format::Json {
            eprintln!("{header}")
        } else {
            println!("{header}")
        }
        // One file for the run, not one per job: creating a file costs a journaling file system
        // more than a short job's whole process, and a job's lines are one `grep '^\[job\] '` away.
        let log = std::io::BufWriter::new(std::fs::File::create(log_path).unwrap_or_else(|_| null_sink()));
        Renderer {
            live: live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8))),
            bars: HashMap::new(),
            steps: HashMap::new(),
            tails: HashMap::new(),
            log_path: log_path.to_path_buf(),
            log,
            to_stderr: format == Format::Json,
            out: String::new(),
        }
    }

    /// Renders events until the run ends. It runs on a thread of its own: the terminal and the
    /// log files never hold up the thread that starts the next job. Between batches it rests for
    /// [`BATCH_PAUSE`] while events gather, so that a busy run wakes it about fifty times a second
    /// rather than once per line, unless the batch was large (then the producer is never held up
    /// by the pause); `run_ended` (dropped or sent to when the engine returns) ends
    /// the rest at once, so the last lines never wait.
    pub fn consume(&mut self, mut rx: mpsc::Receiver<RunEvent>, run_ended: std::sync::mpsc::Receiver<()>) {
        // A batch this large means a step prints faster than the pause lets through (the channel
        // holds `EVENT_BUFFER` events, so pausing would cap a chatty step at that many lines per
        // pause): the next batch is taken at once, and each wake-up still renders many lines.
        let busy = rx.max_capacity() / 16;
        while let Some(event) = rx.blocking_recv() {
            self.event(event);
            let mut batch = 1;
            // Whatever else arrived meanwhile is rendered with it, then written at once.
            while let Ok(event) = rx.try_recv() {
                self.event(event);
                batch += 1;
            }
            self.flush();
            if batch < busy {
                // The pause, in slices: it ends early when the run ends (nothing is ever sent, the
                // sender is dropped) or when the channel fills up, so a step that starts printing
                // fast during the pause waits on a full channel for a slice at most.
                for _ in 0..PAUSE_SLICES {
                    let slice = run_ended.recv_timeout(BATCH_PAUSE / PAUSE_SLICES);
                    if matches!(slice, Err(std::sync::mpsc::RecvTimeoutError::Disconnected)) || rx.len() >= busy {
                        break;
                    }
                }
            }
        }
        self.flush();
    }

    fn print(&mut self, line: &str) {
        self.out.push_str(line);
        self.out.push('\n');
    }

    /// Writes the lines rendered so far, and the log's, so that the log can be followed.
    fn flush(&mut self) {
        let _ = self.log.flush();
        if self.out.is_empty() {
            return;
        }
        let result = if self.to_stderr {
            std::io::stderr().lock().write_all(self.out.as_bytes())
        } else {
            std::io::stdout().lock().write_all(self.out.as_bytes())
        };
        // A closed pipe (`tandem run | head`) is not the run's problem.
        let _ = result;
        self.out.clear();
    }

    fn log(&mut self, job: &str, line: &str) {
        let _ = writeln!(self.log, "[{job}] {line}");
    }

    fn event(&mut self, event: RunEvent) {
        match event {
            RunEvent::JobStarted { job, steps } => {
                let n_steps = steps.len();
                self.steps.insert(job.clone(), steps);
                self.log(&job, &format!("== job {job}"));
                match &self.live {
                    Some(multi) => {
                        let bar = multi.add(ProgressBar::new(n_steps as u64));
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner:.cyan} {prefix:.bold} [{pos}/{len}] {wide_msg} {elapsed:>4}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.set_prefix(job.clone());
                        bar.enable_steady_tick(Duration::from_millis(120));
                        self.bars.insert(job, bar);
                    }
                    None => self.print(&format!("[{job}] started ({n_steps} steps)")),
                }
            }
            RunEvent::StepStarted { job, step } => {
                let name = self.step_name(&job, step);
                self.log(&job, &format!("-- step {}: {name}", step + 1));
                match self.bars.get(&job) {
                    Some(bar) => bar.set_message(name),
                    None => self.print(&format!("[{job}] ▶ {name}")),
                }
            }
            RunEvent::Line { job, step, stream, text } => {
                self.log(&job, &text);
                match self.bars.get(&job) {
                    Some(bar) => {
                        let name = self.step_name(&job, step);
                        let short: String = text.chars().take(80).collect();
                        bar.set_message(format!("{name} · {short}"));
                    }
                    None => {
                        let marker = if stream == Stream::Stderr { "!" } else { "|" };
                        let _ = writeln!(self.out, "[{job}] {marker} {text}");
                    }
                }
                // The line and its job's name end here, kept rather than copied.
                let tail = self.tails.entry((job, step)).or_default();
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            RunEvent::StepFinished { job, step, status, duration } => {
                let name = self.step_name(&job, step);
                self.log(&job, &format!("-- step {}: {name}: {} in {}", step + 1, status.as_str(), human(duration)));
                match self.bars.get(&job) {
                    Some(bar) => bar.inc(1),
                    None if status == Status::Skipped => self.print(&format!("[{job}] – {name} (skipped)")),
                    None => self.print(&format!("[{job}] {} {name} ({})", symbol(status), human(duration))),
                }
            }
            RunEvent::JobFinished { job, status, duration, error } => {
                if let Some(error) = &error {
                    self.log(&job, &format!("error: {error}"));
                }
                self.log(&job, &format!("== job {job}: {}", status.as_str()));
                let text = format!(
                    "{} {job}: {}{} ({})",
                    symbol(status),
                    status.as_str(),
                    error.map(|e| format!(" — {e}")).unwrap_or_default(),
                    human(duration)
                );
                match self.bars.remove(&job) {
                    Some(bar) => {
                        bar.set_style(
                            ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        bar.finish_with_message(text);
                    }
                    None => self.print(&text),
                }
            }
        }
    }

    fn step_name(&self, job: &str, step: usize) -> String {
        self.steps.get(job).and_then(|s| s.get(step)).cloned().unwrap_or_else(|| format!("step {}", step + 1))
    }

    /// Prints what a person needs after the run: failures' last lines, the table, summaries.
    pub fn finish(self, report: &RunReport) {
        let mut out = String::new();
        if self.live.is_some() {
            for job in &report.jobs {
                for (index, step) in job.steps.iter().enumerate() {
                    if step.outcome == Status::Failure {
                        out.push_str(&format!("\n── {} › {} (last lines)\n", job.name, step.name));
                        for line in self.tails.get(&(job.name.clone(), index)).into_iter().flatten() {
                            out.push_str(&format!("  {line}\n"));
                        }
                    }
                }
            }
        }
        out.push('\n');
        out.push_str(&summary_table(report));
        for job in report.jobs.iter().filter(|j| !j.summary.trim().is_empty()) {
            out.push_str(&format!("\n── summary of {}\n{}", job.name, job.summary));
        }
        if !report.artifacts.is_empty() {
            out.push_str(&format!(
                "\nartifacts: {} in {}\n",
                report.artifacts.join(", "),
                report.artifacts_dir.display()
            ));
        }
        out.push_str(&format!("log: {}\n", self.log_path.display()));
        let verdict = match report.status {
            Status::Success => format!("✓ {} succeeded in {}", report.workflow, human(report.duration)),
            Status::Failure => format!("✗ {} failed after {}", report.workflow, human(report.duration)),
            Status::Cancelled => format!("⊘ {} was cancelled after {}", report.workflow, human(report.duration)),
            Status::Skipped => format!("– {} was skipped", report.workflow),
        };
        out.push_str(&verdict);
        if self.to_stderr {
            eprintln!("{out}");
        } else {
            println!("{out}");
        }
    }
}

fn null_sink() -> std::fs::File {
    // Logging to a file is a convenience; when it cannot be created, write nowhere.
    std::fs::File::options().write(true).open("/dev/null").unwrap_or_else(|_| std::process::exit(3))
}

fn symbol(status: Status) -> &'static str {
    match status {
        Status::Success => "✓",
        Status::Failure => "✗",
        Status::Cancelled => "⊘",
        Status::Skipped => "–",
    }
}

pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", duration.as_millis())
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", duration.as_secs() / 60, duration.as_secs() % 60)
    }
}

/// The job / step / status / duration table.
pub fn summary_table(report: &RunReport) -> String {
    use std::fmt::Write;
    // Written straight into one string: a run of many short jobs ends with this table, and a
    // string per cell cost more than the table is worth.
    let mut rows: Vec<[Cow<'_, str>; 4]> = vec![["JOB".into(), "STEP".into(), "STATUS".into(), "DURATION".into()]];
    for job in &report.jobs {
        rows.push([job.name.as_str().into(), "".into(), status_label(job.status).into(), human(job.duration).into()]);
        for step in &job.steps {
            let status = if step.outcome == Status::Failure && step.status == Status::Success {
                "✓ success (failed, continue-on-error)"
            } else {
                status_label(step.status)
            };
            let name = match step.name.char_indices().nth(60) {
                Some((end, _)) => &step.name[..end],
                None => step.name.as_str(),
            };
            rows.push(["".into(), name.into(), status.into(), human(step.duration).into()]);
        }
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::with_capacity(rows.len() * (widths.iter().sum::<usize>() + 8));
    for row in &rows {
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            if c < 3 {
                out.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count()));
            }
        }
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    for job in report.jobs.iter().filter(|j| j.error.is_some()) {
        let _ = writeln!(out, "error in {}: {}", job.name, job.error.as_deref().unwrap_or_default());
    }
    out
}

/// A status with its symbol, as the summary shows it.
fn status_label(status: Status) -> &'static str {
    match status {
        Status::Success => "✓ success",
        Status::Failure => "✗ failure",
        Status::Cancelled => "⊘ cancelled",
        Status::Skipped => "– skipped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exec::engine::{JobReport, StepReport};

    #[test]
    fn the_summary_lines_up_its_columns_and_shortens_long_step_names() {
        let step = |name: &str, status, outcome, ms| StepReport {
            name: name.to_string(),
            status,
            outcome,
            started_at_ms: 0,
            duration: Duration::from_millis(ms),
        };
        let job = |name: &str, status, error: Option<&str>, steps| JobReport {
            id: name.to_string(),
            name: name.to_string(),
            status,
            started_at_ms: 0,
            duration: Duration::from_millis(1500),
            steps,
            summary: String::new(),
            error: error.map(str::to_string),
            outputs: Default::default(),
        };
        let long = "Run a step whose name goes on well past the sixty characters the table shows";
        let report = RunReport {
            workflow: "ci".into(),
            status: Status::Failure,
            duration: Duration::from_secs(3),
            jobs: vec![
                job("build", Status::Success, None, vec![step(long, Status::Success, Status::Failure, 20)]),
                job(
                    "test",
                    Status::Failure,
                    Some("exit code 1"),
                    vec![step("Run cargo test", Status::Failure, Status::Failure, 900)],
                ),
            ],
            artifacts: Vec::new(),
            artifacts_dir: PathBuf::new(),
        };
        let shown = long.chars().take(60).collect::<String>();
        let expected = [
            format!("JOB    STEP{}  STATUS                                 DURATION", " ".repeat(56)),
            format!("build  {}  ✓ success                              1.5s", " ".repeat(60)),
            format!("       {shown}  ✓ success (failed, continue-on-error)  20ms"),
            format!("test   {}  ✗ failure                              1.5s", " ".repeat(60)),
            format!("       Run cargo test{}  ✗ failure                              900ms", " ".repeat(46)),
            "error in test: exit code 1".to_string(),
        ];
        assert_eq!(summary_table(&report), expected.join("\n") + "\n");
    }
}
