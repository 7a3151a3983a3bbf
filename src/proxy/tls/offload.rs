//! The expensive step of a handshake, off the event loops.
//!
//! Processing a ClientHello is where a server spends nearly all of a
//! handshake's CPU: the key exchange, the key schedule and, in a full
//! handshake, the signature (about 1 ms for RSA 2048). Done on a worker's
//! event loop, it holds up every other connection of that worker for as
//! long; under a flood of new connections, requests on established ones
//! would queue behind the handshakes. So that step runs on a small pool of
//! threads shared by all workers, while the event loops keep serving and
//! only do the handshake's I/O.
//!
//! The pool is a fixed set of threads fed by a bounded queue: handshakes
//! beyond it wait their turn asynchronously, in order, and a handshake
//! whose connection is gone by the time its turn comes (timed out, dropped
//! to make room) is skipped. Tokio's blocking pool would grow to hundreds
//! of threads under a flood; this one does not.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run handshake computations.
#[derive(Debug)]
pub struct Offload {
    jobs: mpsc::Sender<Job>,
}

impl Offload {
    /// Starts `threads` (at least 1) threads; they end when the pool is
    /// dropped.
    pub fn start(threads: usize) -> io::Result<Offload> {
        let threads = threads.max(1);
        let (jobs, rx) = mpsc::channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("sluicegate-tls-{i}"))
                .spawn(move || {
                    loop {
                        // One thread waits on the queue, the others on the
                        // lock; whoever gets a job releases the lock first.
                        let job = rx
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .blocking_recv();
                        let Some(job) = job else { break };
                        // A panic ends that handshake, not the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(Offload { jobs })
    }

    /// Runs `f` on the pool when its turn comes. `None` when the pool has
    /// stopped, or `f` panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The waiting side gave up (timeout, eviction): skip the work.
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_skips_abandoned_ones() {
        let pool = Arc::new(Offload::start(1).unwrap());
        assert_eq!(pool.run(|| 6 * 7).await, Some(42));
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, None);
        // The thread survived the panic.
        assert_eq!(pool.run(|| 1).await, Some(1));

        // A job whose caller is gone is not run.
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(move || block_rx.recv().ok()).await }
        });
        tokio::task::yield_now().await;
        let flag = ran.clone();
        let abandoned = pool.run(move || flag.store(true, std::sync::atomic::Ordering::SeqCst));
        // Queue it, then give up on it.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(20), abandoned).await;
        block_tx.send(()).unwrap();
        assert_eq!(blocker.await.unwrap(), Some(Some(())));
        assert_eq!(pool.run(|| 2).await, Some(2));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
