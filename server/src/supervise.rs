//! The tasks an instance cannot live without (the Redis pub/sub reader, the
//! stream repairs, count pushes, the heartbeat) run supervised: if one ends
//! or panics before shutdown, it is logged, counted (`task_restarts_total`,
//! `/healthz`) and started again, instead of the instance going on deaf.

use crate::metrics;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pause before a restart, so that a task failing at once does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(200);

/// How many times each supervised task was restarted.
#[derive(Default)]
pub struct Restarts(Mutex<BTreeMap<&'static str, u64>>);

impl Restarts {
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().clone()
    }

    fn record(&self, task: &'static str) {
        *self.0.lock().entry(task).or_default() += 1;
        metrics::task_restarted(task);
    }
}

/// Runs the future `make` gives, and a new one whenever it ends before
/// `shutdown` is cancelled.
pub fn spawn<F, Fut>(
    task: &'static str,
    restarts: Arc<Restarts>,
    shutdown: CancellationToken,
    mut make: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            // Its own task, so that a panic ends this run only.
            let ended = tokio::spawn(make()).await;
            if shutdown.is_cancelled() {
                return;
            }
            match ended {
                Err(err) if err.is_panic() => {
                    tracing::error!(task, "task panicked; restarting it")
                }
                _ => tracing::error!(task, "task ended; restarting it"),
            }
            restarts.record(task);
            tokio::time::sleep(RESTART_DELAY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_task_that_panics_or_ends_is_restarted_and_counted() {
        let restarts = Arc::new(Restarts::default());
        let runs = Arc::new(AtomicU32::new(0));
        let shutdown = CancellationToken::new();
        let (done, finished) = tokio::sync::oneshot::channel();
        let mut done = Some(done);
        spawn("t", restarts.clone(), shutdown.clone(), {
            let runs = runs.clone();
            move || {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                let done = if run == 2 { done.take() } else { None };
                async move {
                    match run {
                        0 => panic!("first run fails"),
                        1 => {}
                        _ => {
                            let _ = done.map(|d| d.send(()));
                            std::future::pending::<()>().await
                        }
                    }
                }
            }
        });
        finished.await.expect("third run");
        assert_eq!(restarts.snapshot().get("t"), Some(&2));
        shutdown.cancel();
    }
}
