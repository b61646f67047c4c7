//! The merge queue as a pure state machine: events in (a change enqueued or removed, a batch's CI
//! finished, a batch did not merge cleanly), actions out (test a batch on top of main or of the
//! batch before it, cancel a batch, fast-forward main to a batch, eject a change with its reason).
//! The server drives it with real runs and git; the simulation drives it with a model of CI.
//!
//! Changes wait in priority order. Up to `max_parallel` batches are tested at once, each of up to
//! `max_batch` changes, each on top of the one before it (speculation: it assumes the earlier
//! batches pass). Main moves only to a tested batch's commit, in order. A failed batch is split
//! in halves (bisection) until the change that fails alone is found and ejected; the others go
//! on. A failure marked flaky is tested once more before it counts.

use std::collections::{HashMap, VecDeque};

pub type ChangeId = u64;
pub type BatchId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// The most changes tested together.
    pub max_batch: usize,
    /// The most batches tested at once (1: no speculation).
    pub max_parallel: usize,
    /// How many times a change may be tested again after a failure marked flaky.
    pub flaky_retries: u32,
    /// A batch built on another batch (speculation) starts only with at least this many changes:
    /// a lone change waits for company or for the batches ahead, which costs little time and
    /// saves a run.
    pub min_speculative: usize,
}

impl Config {
    /// One change at a time, each tested on main before it merges.
    pub const ONE_AT_A_TIME: Config = Config { max_batch: 1, max_parallel: 1, flaky_retries: 1, min_speculative: 1 };
    /// bors-style: everything waiting in one batch, one batch at a time, bisected on failure.
    pub const BORS: Config = Config { max_batch: 16, max_parallel: 1, flaky_retries: 1, min_speculative: 1 };
}

impl Default for Config {
    /// Tandem's: batches of up to 8, four tested at once, speculation with five changes or more
    /// waiting (chosen with `cargo xtask bench queue`: fewer runs than bors-style batching's time
    /// allows, shorter times at every failure rate).
    fn default() -> Config {
        Config { max_batch: 8, max_parallel: 4, flaky_retries: 1, min_speculative: 5 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Enqueued {
        change: ChangeId,
        priority: i32,
    },
    Removed {
        change: ChangeId,
    },
    /// The driver could not build `batch`: `change` does not merge on top of what is before it.
    Conflict {
        batch: BatchId,
        change: ChangeId,
        detail: String,
    },
    /// `batch`'s CI finished; `flaky` marks a failure CI knows to be unreliable.
    Finished {
        batch: BatchId,
        passed: bool,
        flaky: bool,
        detail: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build the commit of `changes` merged in order on top of main (`after: None`) or of the
    /// commit of batch `after`, and run CI on it.
    Test {
        batch: BatchId,
        after: Option<BatchId>,
        changes: Vec<ChangeId>,
    },
    /// Stop testing `batch` (what it was built on will not merge as it is).
    Cancel {
        batch: BatchId,
    },
    /// Fast-forward main to `batch`'s commit: `changes` are merged.
    Merge {
        batch: BatchId,
        changes: Vec<ChangeId>,
    },
    Eject {
        change: ChangeId,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Its CI runs (or ran: `Some(result)`).
    Testing(Option<bool>),
    /// Known to fail once the batches before it merge (its bisection's other half): it is not
    /// tested, and nothing is built on top of it.
    KnownToFail,
}

#[derive(Debug, Clone)]
struct Batch {
    id: BatchId,
    changes: Vec<ChangeId>,
    state: State,
    flaky: bool,
    detail: String,
}

/// What a queue holds; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Queue {
    config: Config,
    /// (priority, arrival, change), tested highest priority first, then in order of arrival.
    waiting: Vec<(i32, i64, ChangeId)>,
    /// In chain order: the first is built on main, each next on the one before.
    batches: VecDeque<Batch>,
    next_batch: BatchId,
    arrivals: i64,
    retries: HashMap<ChangeId, u32>,
}

impl Queue {
    pub fn new(config: Config) -> Queue {
        let config = Config { max_batch: config.max_batch.max(1), max_parallel: config.max_parallel.max(1), ..config };
        Queue {
            config,
            waiting: Vec::new(),
            batches: VecDeque::new(),
            next_batch: 1,
            arrivals: 0,
            retries: HashMap::new(),
        }
    }

    pub fn config(&self) -> Config {
        self.config
    }

    /// The changes waiting, in the order they will be tested.
    pub fn waiting(&self) -> Vec<ChangeId> {
        self.waiting.iter().map(|w| w.2).collect()
    }

    /// The batches being tested, in chain order: (batch, its changes).
    pub fn batches(&self) -> Vec<(BatchId, Vec<ChangeId>)> {
        self.batches.iter().map(|b| (b.id, b.changes.clone())).collect()
    }

    /// Whether `change` is anywhere in the queue.
    pub fn holds(&self, change: ChangeId) -> bool {
        self.waiting.iter().any(|w| w.2 == change) || self.batches.iter().any(|b| b.changes.contains(&change))
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Enqueued { change, priority } => {
                if !self.holds(change) {
                    self.arrivals += 1;
                    self.waiting.push((priority, self.arrivals, change));
                    self.waiting.sort_by_key(|(priority, arrival, _)| (-(*priority as i64), *arrival));
                }
            }
            Event::Removed { change } => {
                self.waiting.retain(|w| w.2 != change);
                if let Some(at) = self.batches.iter().position(|b| b.changes.contains(&change)) {
                    self.unwind(at, &mut actions);
                    self.waiting.retain(|w| w.2 != change);
                }
            }
            Event::Conflict { batch, change, detail } => {
                if let Some(at) = self.batches.iter().position(|b| b.id == batch) {
                    self.unwind(at, &mut actions);
                    self.waiting.retain(|w| w.2 != change);
                    self.retries.remove(&change);
                    actions.push(Action::Eject { change, reason: format!("it does not merge cleanly: {detail}") });
                }
            }
            Event::Finished { batch, passed, flaky, detail } => {
                if let Some(found) = self.batches.iter_mut().find(|b| b.id == batch && b.state == State::Testing(None))
                {
                    found.state = State::Testing(Some(passed));
                    found.flaky = flaky;
                    found.detail = detail;
                }
            }
        }
        self.settle(&mut actions);
        self.fill(&mut actions);
        actions
    }

    /// Cancels the batch at `at` and every batch built on it; their changes wait again, first.
    fn unwind(&mut self, at: usize, actions: &mut Vec<Action>) {
        let dropped: Vec<Batch> = self.batches.drain(at..).collect();
        let mut front = Vec::new();
        for batch in dropped {
            if batch.state == State::Testing(None) {
                actions.push(Action::Cancel { batch: batch.id });
            }
            front.extend(batch.changes);
        }
        self.requeue_first(front);
    }

    /// Puts `changes` back at the head of the waiting line, in their order: they were in the
    /// queue before anything that waits now, whatever its priority.
    fn requeue_first(&mut self, changes: Vec<ChangeId>) {
        let first = self.waiting.iter().map(|w| w.1).min().unwrap_or(0);
        let n = changes.len() as i64;
        for (i, change) in changes.into_iter().enumerate() {
            self.waiting.push((i32::MAX, first - n + i as i64, change));
        }
        self.waiting.sort_by_key(|(priority, arrival, _)| (-(*priority as i64), *arrival));
    }

    /// Acts on the results at the head of the chain, in order.
    fn settle(&mut self, actions: &mut Vec<Action>) {
        while let Some(head) = self.batches.front() {
            let retry = head.flaky && self.may_retry(&head.changes);
            match head.state {
                State::Testing(None) => break,
                State::Testing(Some(true)) => {
                    let head = self.batches.pop_front().expect("the head exists");
                    for change in &head.changes {
                        self.retries.remove(change);
                    }
                    actions.push(Action::Merge { batch: head.id, changes: head.changes });
                }
                State::Testing(Some(false)) if retry => {
                    let changes = head.changes.clone();
                    for change in &changes {
                        *self.retries.entry(*change).or_default() += 1;
                    }
                    let head = self.batches.front_mut().expect("the head exists");
                    head.state = State::Testing(None);
                    head.flaky = false;
                    actions.push(Action::Test { batch: head.id, after: None, changes });
                    break;
                }
                State::Testing(Some(false)) | State::KnownToFail => {
                    let head = self.batches.pop_front().expect("the head exists");
                    // Everything built on it was built on a failure: tested again later.
                    self.unwind(0, actions);
                    // What waits behind the halves, in order.
                    let behind: Vec<ChangeId> = self.waiting.drain(..).map(|w| w.2).collect();
                    if let [change] = head.changes.as_slice() {
                        self.retries.remove(change);
                        let reason = if head.detail.is_empty() {
                            "it fails CI on top of main".to_string()
                        } else {
                            format!("it fails CI on top of main ({})", head.detail)
                        };
                        actions.push(Action::Eject { change: *change, reason });
                        self.requeue_first(behind);
                        continue;
                    }
                    let (first, second) = head.changes.split_at(head.changes.len() / 2);
                    let a = self.new_batch(first.to_vec(), State::Testing(None));
                    let b = self.new_batch(second.to_vec(), State::KnownToFail);
                    actions.push(Action::Test { batch: a.id, after: None, changes: a.changes.clone() });
                    self.batches.push_back(a);
                    self.batches.push_back(b);
                    self.requeue_first(behind);
                    break;
                }
            }
        }
    }

    fn may_retry(&self, changes: &[ChangeId]) -> bool {
        changes.iter().all(|c| self.retries.get(c).copied().unwrap_or(0) < self.config.flaky_retries)
    }

    fn new_batch(&mut self, changes: Vec<ChangeId>, state: State) -> Batch {
        let id = self.next_batch;
        self.next_batch += 1;
        Batch { id, changes, state, flaky: false, detail: String::new() }
    }

    /// Starts batches while there is room and changes wait, never on top of a batch known to fail.
    fn fill(&mut self, actions: &mut Vec<Action>) {
        while self.batches.len() < self.config.max_parallel
            && !self.waiting.is_empty()
            && (self.batches.is_empty() || self.waiting.len() >= self.config.min_speculative)
            && !self.batches.iter().any(|b| b.state == State::KnownToFail)
        {
            let n = self.config.max_batch.min(self.waiting.len());
            let changes: Vec<ChangeId> = self.waiting.drain(..n).map(|w| w.2).collect();
            let after = self.batches.back().map(|b| b.id);
            let batch = self.new_batch(changes, State::Testing(None));
            actions.push(Action::Test { batch: batch.id, after, changes: batch.changes.clone() });
            self.batches.push_back(batch);
        }
    }
}
