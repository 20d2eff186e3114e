//! Giving freed memory back to the system. glibc's allocator keeps what
//! connections free in its per-thread arenas for reuse: after 5,000 members
//! of a room left, the process still held the 48 MiB they had used. Every
//! [`CHECK_EVERY`], if more than [`KEPT`] of the heap is free, it is
//! released (`malloc_trim`). The process's own memory only: other
//! allocators return memory by themselves, and then this does nothing.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Free heap kept for the next connections. A room's join storm leaves
/// behind the history frame each joiner was sent (written, then freed):
/// with 16 MiB kept, a 5,000-member room's members each held 3 KiB of that
/// garbage for good.
const KEPT: usize = 4 * 1024 * 1024;

/// Runs until `shutdown`.
pub async fn give_back_freed(shutdown: CancellationToken) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if free_heap() > KEPT {
            // Walks every arena: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Publishes the heap's bytes in use and free (`heap_bytes`): what the
/// process's live data takes, apart from the free memory the allocator
/// keeps, which its resident size counts too.
pub fn record_heap() {
    let (in_use, free) = heap();
    crate::metrics::heap(in_use, free);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> (usize, usize) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd, info.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> (usize, usize) {
    (0, 0)
}

fn free_heap() -> usize {
    heap().1
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(
        released = released != 0,
        "returned freed memory to the system"
    );
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
