//! Cancellation that flows down: cancelling a run cancels its jobs, cancelling a job its steps.
//!
//! A tree of tokens: a child is cancelled with its parent and may be cancelled alone. Making one
//! costs an allocation, not a task that watches the parent (a job makes three).

use tokio_util::sync::CancellationToken;

/// The side that cancels.
#[derive(Debug, Clone)]
pub struct CancelSource {
    token: CancellationToken,
}

/// The side that watches; cheap to clone.
#[derive(Debug, Clone)]
pub struct Cancel {
    token: CancellationToken,
}

impl CancelSource {
    pub fn new() -> (CancelSource, Cancel) {
        let token = CancellationToken::new();
        (CancelSource { token: token.clone() }, Cancel { token })
    }

    /// Cancels every token made from this source and their children. Safe to call twice.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    pub fn token(&self) -> Cancel {
        Cancel { token: self.token.clone() }
    }
}

impl Cancel {
    /// A token that never fires: no source can reach it.
    pub fn never() -> Cancel {
        Cancel { token: CancellationToken::new() }
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once cancelled; never, when every source is gone without cancelling.
    pub async fn cancelled(&mut self) {
        self.token.cancelled().await;
    }

    /// A child source: cancelling it leaves this token alone, while cancelling this token also
    /// cancels the child (at once, when this token is cancelled already).
    pub fn child(&self) -> (CancelSource, Cancel) {
        let token = self.token.child_token();
        (CancelSource { token: token.clone() }, Cancel { token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_parent_cancels_its_children_and_a_child_leaves_its_parent_alone() {
        let (root, token) = CancelSource::new();
        let (job, job_token) = token.child();
        let (step, mut step_token) = job_token.child();
        step.cancel();
        assert!(step_token.is_cancelled());
        assert!(!job_token.is_cancelled() && !token.is_cancelled());
        let (_, mut other) = job_token.child();
        let waiter = tokio::spawn(async move { other.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        root.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert!(job_token.is_cancelled());
        step_token.cancelled().await;
        drop(job);
        // A child made after its parent was cancelled starts cancelled.
        assert!(token.child().1.is_cancelled());
    }

    #[test]
    fn a_token_whose_sources_are_gone_does_not_fire() {
        use std::future::Future;
        let (source, mut token) = CancelSource::new();
        drop(source);
        let mut waiting = std::pin::pin!(token.cancelled());
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiting.as_mut().poll(&mut context).is_pending());
        assert!(!Cancel::never().is_cancelled());
    }
}
