//! Work a connection started and answers in the order it started it: the
//! chat's messages waiting for their commit while the connection reads its
//! next frames, so that one sender's burst shares commits (see
//! [`super::Handler::settle`]).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use sync_wrapper::SyncWrapper;

/// In a [`SyncWrapper`]: the session holding it is borrowed shared across
/// awaits, and this is only ever reached through `&mut`.
type Work<T> = SyncWrapper<Pin<Box<dyn Future<Output = T> + Send>>>;

enum Slot<T> {
    Running(Work<T>),
    /// Finished while older work still ran: kept until its turn.
    Done(T),
}

/// The work started, oldest first: boxed, and only while there is some,
/// since every idle chat connection holds one.
pub struct InOrder<T> {
    // The box is the point: 8 bytes held by an idle connection, where an
    // empty deque is 32.
    #[allow(clippy::box_collection)]
    started: Option<Box<VecDeque<Slot<T>>>>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        InOrder { started: None }
    }
}

impl<T: Send + 'static> InOrder<T> {
    /// How much was started and not yet taken back.
    pub fn len(&self) -> usize {
        self.started.as_ref().map_or(0, |started| started.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, slot: Slot<T>) {
        self.started
            .get_or_insert_with(Box::default)
            .push_back(slot);
    }

    /// The oldest slot, taken out; the box goes once empty.
    fn pop(&mut self) -> Option<Slot<T>> {
        let started = self.started.as_mut()?;
        let slot = started.pop_front();
        if started.is_empty() {
            self.started = None;
        }
        slot
    }

    /// Starts `work`: it is polled once now, so that what it hands on in
    /// its first step (an append to the writer's queue) is handed on after
    /// everything started before. Its outcome comes back at once when it
    /// finished and nothing older waits, else from [`InOrder::next`].
    pub async fn start(&mut self, work: impl Future<Output = T> + Send + 'static) -> Option<T> {
        let mut work: Work<T> = SyncWrapper::new(Box::pin(work));
        let first = poll_fn(|cx| Poll::Ready(work.get_mut().as_mut().poll(cx))).await;
        match first {
            Poll::Ready(outcome) if self.is_empty() => Some(outcome),
            Poll::Ready(outcome) => {
                self.push(Slot::Done(outcome));
                None
            }
            Poll::Pending => {
                self.push(Slot::Running(work));
                None
            }
        }
    }

    /// The oldest outcome, once it is there; never, while nothing runs.
    /// Cancel-safe: nothing is taken until it is returned.
    pub async fn next(&mut self) -> T {
        poll_fn(|cx| {
            let oldest = self
                .started
                .as_mut()
                .and_then(|started| started.front_mut());
            if let Some(Slot::Running(work)) = oldest {
                let Poll::Ready(outcome) = work.get_mut().as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                self.pop();
                return Poll::Ready(outcome);
            }
            match self.pop() {
                Some(Slot::Done(outcome)) => Poll::Ready(outcome),
                None => Poll::Pending,
                Some(Slot::Running(_)) => unreachable!("running work is polled above"),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn outcomes_come_back_in_the_order_work_started() {
        let mut started = InOrder::default();
        let (first, first_done) = oneshot::channel::<u32>();
        let (second, second_done) = oneshot::channel::<u32>();
        assert!(started
            .start(first_done.map(Result::unwrap))
            .await
            .is_none());
        assert!(started
            .start(second_done.map(Result::unwrap))
            .await
            .is_none());
        // Finished at once, behind two that wait: kept for its turn.
        assert!(started.start(async { 3 }).await.is_none());
        second.send(2).unwrap();
        assert!(
            started.next().now_or_never().is_none(),
            "the first is not done"
        );
        first.send(1).unwrap();
        assert_eq!(started.next().await, 1);
        assert_eq!(started.next().await, 2);
        assert_eq!(started.next().await, 3);
        assert_eq!(started.len(), 0);
        assert!(started.next().now_or_never().is_none(), "nothing runs");
    }

    #[tokio::test]
    async fn work_done_at_once_with_nothing_older_is_answered_at_once() {
        let mut started = InOrder::default();
        assert_eq!(started.start(async { 7 }).await, Some(7));
        assert_eq!(started.len(), 0);
    }

    #[tokio::test]
    async fn each_work_takes_its_first_step_when_started() {
        let steps = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut started = InOrder::default();
        for n in 0..3 {
            let steps = steps.clone();
            started
                .start(async move {
                    steps.lock().unwrap().push(n);
                    std::future::pending::<()>().await;
                })
                .await;
        }
        assert_eq!(*steps.lock().unwrap(), [0, 1, 2]);
    }
}
