//! Freed memory goes back to the operating system while a thread is idle.
//!
//! The binary's allocator (mimalloc) hands pages it no longer uses back to
//! the system only after a delay, and only when the thread that freed them
//! calls into the allocator again. A worker that goes quiet after a burst,
//! holding nothing but idle keep-alive connections, makes no such call: the
//! burst's buffers stayed resident for as long as the worker stayed quiet
//! (after 10,000 idle HTTP/2 connections had been closed, 27-38 MB more
//! than before them; with the collection, 1-3 MB). Each runtime thread
//! therefore asks the allocator to collect every [`PERIOD`], which also
//! returns what a busy thread freed more than the allocator's delay ago.
//!
//! The library does not choose the allocator, so the binary installs the
//! call with [`set_collector`]; without one (tests, embedders) nothing
//! runs.

use std::sync::OnceLock;
use std::time::Duration;

/// How often each runtime thread collects. A collection visits the
/// thread's partly used pages once; the allocator purges what has been
/// free for its delay (a second by default) or more.
pub const PERIOD: Duration = Duration::from_secs(2);

static COLLECTOR: OnceLock<fn()> = OnceLock::new();

/// Installs the call that makes the allocator collect the calling thread's
/// freed memory. The first call wins.
pub fn set_collector(collect: fn()) {
    let _ = COLLECTOR.set(collect);
}

/// Spawns, on the current runtime, a task that collects every [`PERIOD`].
/// Meant for a current-thread runtime, whose one thread the task then
/// shares with the requests it serves; like `tokio::spawn`, it must be
/// called from inside a runtime. Nothing is spawned without a collector.
pub fn spawn_collector() {
    let Some(&collect) = COLLECTOR.get() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            collect();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        // Per thread: other tests' workers may collect at the same time.
        static CALLS: Cell<usize> = const { Cell::new(0) };
    }

    fn count() {
        CALLS.with(|c| c.set(c.get() + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn collects_every_period_once_installed() {
        spawn_collector();
        tokio::time::sleep(PERIOD * 3).await;
        assert_eq!(CALLS.with(Cell::get), 0, "no collector installed yet");
        set_collector(count);
        spawn_collector();
        // The first tick is immediate, then one per period.
        tokio::time::sleep(PERIOD * 3 + PERIOD / 2).await;
        assert_eq!(CALLS.with(Cell::get), 4);
    }
}
