//! Cancellation that flows down: cancelling a run cancels its jobs, cancelling a job its steps.

use std::sync::Arc;

use tokio::sync::watch;

/// The side that cancels.
#[derive(Debug, Clone)]
pub struct CancelSource {
    tx: Arc<watch::Sender<bool>>,
}

/// The side that watches; cheap to clone.
#[derive(Debug, Clone)]
pub struct Cancel {
    rx: watch::Receiver<bool>,
}

impl CancelSource {
    pub fn new() -> (CancelSource, Cancel) {
        let (tx, rx) = watch::channel(false);
        (CancelSource { tx: Arc::new(tx) }, Cancel { rx })
    }

    /// Cancels every token made from this source and their children. Safe to call twice.
    pub fn cancel(&self) {
        let _ = self.tx.send(true);
    }

    pub fn token(&self) -> Cancel {
        Cancel { rx: self.tx.subscribe() }
    }
}

impl Cancel {
    /// A token that never fires.
    pub fn never() -> Cancel {
        let (source, token) = CancelSource::new();
        std::mem::forget(source.tx);
        token
    }

    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&mut self) {
        if self.rx.wait_for(|c| *c).await.is_err() {
            // The source is gone without cancelling: this token can never fire.
            std::future::pending::<()>().await;
        }
    }

    /// A child source: cancelling it leaves this token alone, while cancelling this token also
    /// cancels the child. Must be called inside a tokio runtime.
    pub fn child(&self) -> (CancelSource, Cancel) {
        let (source, token) = CancelSource::new();
        let mut parent = self.clone();
        let tx = source.tx.clone();
        let forward = source.tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = parent.cancelled() => { let _ = forward.send(true); }
                () = tx.closed() => {}
            }
        });
        (source, token)
    }
}
