//! Request coalescing: concurrent misses of one key make one upstream
//! request (the leader's); the other requests wait for its response head
//! and then stream its body as it arrives, from the first byte the
//! leader got, without waiting for the whole body.
//!
//! A flight lives in a process-wide table from the first miss until its
//! response is stored (or turns out not to be shareable), so requests
//! arriving in between join it rather than start another. Its chunks are
//! kept for late joiners up to the route's `maxBodySize`; past that the
//! response is not stored, late requests go to the upstream themselves
//! and those already following keep streaming. Chunks are `Bytes`: every
//! follower shares the same memory.
//!
//! Waiters work across worker threads (the channels are the runtime's
//! own, which do not depend on a thread).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::sync::{mpsc, oneshot};

use super::key::KeyId;

/// The flights in progress.
#[derive(Debug, Default)]
pub struct Flights {
    map: Mutex<HashMap<KeyId, Arc<Flight>>>,
}

#[derive(Debug)]
struct Flight {
    key: KeyId,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// The leader's response head has not arrived.
    Pending(Vec<oneshot::Sender<Outcome>>),
    /// The leader's response is shared and streaming (or has ended).
    Streaming(Stream),
}

#[derive(Debug)]
struct Stream {
    head: Arc<SharedHead>,
    /// Every chunk so far, for late joiners; `None` once past the limit.
    replay: Option<Vec<Bytes>>,
    replay_len: u64,
    max_replay: u64,
    followers: Vec<mpsc::UnboundedSender<Piece>>,
    /// Set when the body has ended (true) or failed (false).
    ended: Option<bool>,
}

/// The response head a leader shares.
#[derive(Debug)]
pub struct SharedHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The leader's request, as the response's policy reads it: a waiter
    /// whose varying fields differ must not get this response.
    pub request: HeaderMap,
    pub vary: Box<[http::HeaderName]>,
}

/// What a waiting request gets.
#[derive(Debug)]
pub enum Outcome {
    /// The leader's response, to stream.
    Shared(Arc<SharedHead>, Follow),
    /// The leader freshened the stored entry: look it up again.
    Refreshed,
    /// The upstream failed the leader.
    Failed,
    /// The leader's response is not for everyone (or it gave up, or the
    /// wait timed out): go to the upstream.
    NotShared,
}

/// A chunk, as followers see it.
#[derive(Debug, Clone)]
enum Piece {
    Data(Bytes),
    End,
    Failed,
}

/// How a request took part in a flight.
pub enum Joined {
    /// First: it asks the upstream and must report what happened.
    Lead(Leader),
    /// Another request leads.
    Wait(Waiter),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<KeyId, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leads the flight of `key`, or waits for the one in progress.
    pub fn join(self: &Arc<Self>, key: KeyId) -> Joined {
        let flight = {
            let mut map = self.lock();
            match map.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let f = Arc::new(Flight {
                        key,
                        state: Mutex::new(State::Pending(Vec::new())),
                    });
                    map.insert(key, f.clone());
                    return Joined::Lead(Leader {
                        flights: self.clone(),
                        flight: f,
                        done: false,
                    });
                }
            }
        };
        Joined::Wait(flight.waiter())
    }

    /// Leads the flight of `key` if none is in progress (a background
    /// refresh, which nobody waits for).
    pub fn try_lead(self: &Arc<Self>, key: KeyId) -> Option<Leader> {
        match self.join(key) {
            Joined::Lead(l) => Some(l),
            Joined::Wait(_) => None,
        }
    }

    fn remove(&self, flight: &Arc<Flight>) {
        let mut map = self.lock();
        if map.get(&flight.key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(&flight.key);
        }
    }

    /// Flights in progress.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Flight {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn waiter(&self) -> Waiter {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        match &mut *state {
            State::Pending(waiters) => waiters.push(tx),
            State::Streaming(s) => {
                let _ = tx.send(s.follow());
            }
        }
        Waiter { rx }
    }

    /// Tells every waiter `outcome` (made once per waiter).
    fn settle(&self, outcome: impl Fn() -> Outcome) {
        let waiters = match &mut *self.state() {
            State::Pending(w) => std::mem::take(w),
            State::Streaming(_) => return,
        };
        for w in waiters {
            let _ = w.send(outcome());
        }
    }
}

impl Stream {
    /// A new follower: the chunks so far, then the rest as they come.
    fn follow(&mut self) -> Outcome {
        let Some(replay) = &self.replay else {
            return Outcome::NotShared;
        };
        let replay: VecDeque<Bytes> = replay.iter().cloned().collect();
        let follow = match self.ended {
            Some(true) => Follow {
                replay,
                rx: Rx::Closed,
                ended: true,
            },
            Some(false) => return Outcome::Failed,
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.followers.push(tx);
                Follow {
                    replay,
                    rx: Rx::Unbounded(rx),
                    ended: false,
                }
            }
        };
        Outcome::Shared(self.head.clone(), follow)
    }

    fn send(&mut self, piece: &Piece) {
        self.followers.retain(|f| f.send(piece.clone()).is_ok());
    }
}

/// The request that asks the upstream for a flight. Dropping it without
/// a report sends the waiters to the upstream themselves.
#[derive(Debug)]
pub struct Leader {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
    done: bool,
}

impl Leader {
    /// Shares the response `head` with the waiters; its body goes through
    /// the returned feed. Up to `max_replay` bytes are kept for requests
    /// that join later.
    pub fn share(mut self, head: SharedHead, max_replay: u64) -> Feed {
        self.done = true;
        let head = Arc::new(head);
        let waiters = {
            let mut state = self.flight.state();
            let waiters = match &mut *state {
                State::Pending(w) => std::mem::take(w),
                State::Streaming(_) => Vec::new(),
            };
            let mut stream = Stream {
                head,
                replay: Some(Vec::new()),
                replay_len: 0,
                max_replay,
                followers: Vec::with_capacity(waiters.len()),
                ended: None,
            };
            let outcomes: Vec<_> = waiters.into_iter().map(|w| (w, stream.follow())).collect();
            *state = State::Streaming(stream);
            outcomes
        };
        for (w, outcome) in waiters {
            let _ = w.send(outcome);
        }
        Feed {
            flights: self.flights.clone(),
            flight: self.flight.clone(),
            done: false,
        }
    }

    /// The stored entry was freshened: waiters look it up again.
    pub fn refreshed(mut self) {
        self.finish(|| Outcome::Refreshed);
    }

    /// The upstream failed.
    pub fn failed(mut self) {
        self.finish(|| Outcome::Failed);
    }

    /// The response is not for the waiters.
    pub fn not_shared(mut self) {
        self.finish(|| Outcome::NotShared);
    }

    fn finish(&mut self, outcome: impl Fn() -> Outcome) {
        self.done = true;
        self.flights.remove(&self.flight);
        self.flight.settle(outcome);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            self.finish(|| Outcome::NotShared);
        }
    }
}

/// Where a shared response's body goes as it streams. Dropped before
/// [`Feed::end`], followers see the body fail.
#[derive(Debug)]
pub struct Feed {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
    done: bool,
}

impl Feed {
    pub fn data(&self, chunk: &Bytes) {
        let mut state = self.flight.state();
        let State::Streaming(s) = &mut *state else {
            return;
        };
        if let Some(replay) = &mut s.replay {
            s.replay_len += chunk.len() as u64;
            if s.replay_len > s.max_replay {
                // Too large to keep for latecomers (or to store): new
                // requests must not join any more.
                s.replay = None;
                drop(state);
                self.flights.remove(&self.flight);
                state = self.flight.state();
                let State::Streaming(s) = &mut *state else {
                    return;
                };
                s.send(&Piece::Data(chunk.clone()));
                return;
            }
            replay.push(chunk.clone());
        }
        s.send(&Piece::Data(chunk.clone()));
    }

    /// The body ended. The flight stays joinable (with the whole body)
    /// until [`Feed::stored`] or drop of the returned handle.
    pub fn end(mut self) -> Ended {
        self.done = true;
        if let State::Streaming(s) = &mut *self.flight.state() {
            s.ended = Some(true);
            s.send(&Piece::End);
            s.followers.clear();
        }
        Ended {
            flights: self.flights.clone(),
            flight: self.flight.clone(),
        }
    }

    fn fail(&mut self) {
        self.done = true;
        self.flights.remove(&self.flight);
        if let State::Streaming(s) = &mut *self.flight.state() {
            s.ended = Some(false);
            s.send(&Piece::Failed);
            s.followers.clear();
            s.replay = None;
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if !self.done {
            self.fail();
        }
    }
}

/// A flight whose body has ended, joinable until the store has the
/// response; dropping it closes the flight.
#[derive(Debug)]
pub struct Ended {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.flights.remove(&self.flight);
    }
}

/// A request waiting for a leader's response head.
pub struct Waiter {
    rx: oneshot::Receiver<Outcome>,
}

impl Waiter {
    /// Waits up to `timeout`; past it the request goes to the upstream
    /// itself.
    pub async fn wait(self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.rx).await {
            Ok(Ok(outcome)) => outcome,
            // The leader went away without a word, or took too long.
            Ok(Err(_)) | Err(_) => Outcome::NotShared,
        }
    }
}

/// A follower's body: the chunks it missed, then the leader's as they
/// arrive.
#[derive(Debug)]
pub struct Follow {
    replay: VecDeque<Bytes>,
    rx: Rx,
    ended: bool,
}

#[derive(Debug)]
enum Rx {
    /// A flight's followers: the leader never waits for them.
    Unbounded(mpsc::UnboundedReceiver<Piece>),
    /// A reader that waits for its consumer (a file read ahead of a
    /// client by a few chunks).
    Bounded(mpsc::Receiver<Piece>),
    Closed,
}

/// The leader's body failed, so a follower's does too.
#[derive(Debug, thiserror::Error)]
#[error("the shared response body failed")]
pub struct FollowError;

impl Follow {
    /// A body fed through a channel of `depth` chunks (the disk storage
    /// streams large entries this way, reading ahead of its client by at
    /// most that much).
    pub fn bounded(depth: usize) -> (FollowSender, Follow) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (
            FollowSender(tx),
            Follow {
                replay: VecDeque::new(),
                rx: Rx::Bounded(rx),
                ended: false,
            },
        )
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, FollowError>>> {
        if let Some(b) = self.replay.pop_front() {
            return Poll::Ready(Some(Ok(b)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = match &mut self.rx {
            Rx::Unbounded(rx) => rx.poll_recv(cx),
            Rx::Bounded(rx) => rx.poll_recv(cx),
            Rx::Closed => Poll::Ready(None),
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Piece::Data(b))) => Poll::Ready(Some(Ok(b))),
            Poll::Ready(Some(Piece::End)) => {
                self.ended = true;
                self.rx = Rx::Closed;
                Poll::Ready(None)
            }
            // A channel closed without `End` is a body cut short.
            Poll::Ready(Some(Piece::Failed)) | Poll::Ready(None) => {
                self.ended = true;
                self.rx = Rx::Closed;
                Poll::Ready(Some(Err(FollowError)))
            }
        }
    }

    pub fn is_end(&self) -> bool {
        self.ended && self.replay.is_empty()
    }
}

/// Feeds a [`Follow::bounded`] body from a blocking thread.
#[derive(Debug)]
pub struct FollowSender(mpsc::Sender<Piece>);

impl FollowSender {
    /// Waits for room; false once the body's reader is gone.
    pub fn data_blocking(&self, chunk: Bytes) -> bool {
        self.0.blocking_send(Piece::Data(chunk)).is_ok()
    }

    pub fn end(self) {
        let _ = self.0.blocking_send(Piece::End);
    }

    pub fn fail(self) {
        let _ = self.0.blocking_send(Piece::Failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> SharedHead {
        SharedHead {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            request: HeaderMap::new(),
            vary: Box::new([]),
        }
    }

    async fn collect(mut f: Follow) -> Result<Vec<u8>, FollowError> {
        let mut out = Vec::new();
        while let Some(b) = std::future::poll_fn(|cx| f.poll_next(cx)).await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    fn key(n: u8) -> KeyId {
        KeyId([n; 16])
    }

    #[tokio::test]
    async fn waiters_stream_the_leaders_body_from_the_first_byte() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(leader) = flights.join(key(1)) else {
            panic!("first request leads");
        };
        let early = match flights.join(key(1)) {
            Joined::Wait(w) => w,
            Joined::Lead(_) => panic!("second waits"),
        };
        let feed = leader.share(head(), 1 << 20);
        feed.data(&Bytes::from_static(b"hello "));
        let Outcome::Shared(_, early) = early.wait(Duration::from_secs(1)).await else {
            panic!("shared");
        };
        // A request joining mid-body gets what it missed first.
        let Joined::Wait(late) = flights.join(key(1)) else {
            panic!("still in flight");
        };
        let Outcome::Shared(_, late) = late.wait(Duration::from_secs(1)).await else {
            panic!("shared");
        };
        feed.data(&Bytes::from_static(b"world"));
        let ended = feed.end();
        assert_eq!(collect(early).await.unwrap(), b"hello world");
        assert_eq!(collect(late).await.unwrap(), b"hello world");
        // Until stored, the whole body is there for newcomers.
        let Joined::Wait(after) = flights.join(key(1)) else {
            panic!("still joinable");
        };
        let Outcome::Shared(_, after) = after.wait(Duration::from_secs(1)).await else {
            panic!("shared");
        };
        assert_eq!(collect(after).await.unwrap(), b"hello world");
        drop(ended);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_failed_body_fails_its_followers() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(leader) = flights.join(key(2)) else {
            panic!()
        };
        let Joined::Wait(w) = flights.join(key(2)) else {
            panic!()
        };
        let feed = leader.share(head(), 1 << 20);
        let Outcome::Shared(_, follow) = w.wait(Duration::from_secs(1)).await else {
            panic!()
        };
        feed.data(&Bytes::from_static(b"part"));
        drop(feed);
        assert!(collect(follow).await.is_err());
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn bodies_past_the_limit_stop_taking_joiners() {
        let flights = Arc::new(Flights::default());
        let Joined::Lead(leader) = flights.join(key(3)) else {
            panic!()
        };
        let Joined::Wait(w) = flights.join(key(3)) else {
            panic!()
        };
        let feed = leader.share(head(), 4);
        let Outcome::Shared(_, follow) = w.wait(Duration::from_secs(1)).await else {
            panic!()
        };
        feed.data(&Bytes::from_static(b"123"));
        feed.data(&Bytes::from_static(b"456"));
        // Past the limit: a new request leads its own flight.
        assert!(matches!(flights.join(key(3)), Joined::Lead(_)));
        drop(feed.end());
        assert_eq!(collect(follow).await.unwrap(), b"123456");
    }

    #[tokio::test]
    async fn leaders_report_to_waiters() {
        let flights = Arc::new(Flights::default());
        for (report, want) in [
            (0, "refreshed"),
            (1, "failed"),
            (2, "not shared"),
            (3, "dropped"),
        ] {
            let Joined::Lead(leader) = flights.join(key(4)) else {
                panic!()
            };
            let Joined::Wait(w) = flights.join(key(4)) else {
                panic!()
            };
            match report {
                0 => leader.refreshed(),
                1 => leader.failed(),
                2 => leader.not_shared(),
                _ => drop(leader),
            }
            let got = match w.wait(Duration::from_secs(1)).await {
                Outcome::Refreshed => "refreshed",
                Outcome::Failed => "failed",
                Outcome::NotShared if report == 2 => "not shared",
                Outcome::NotShared => "dropped",
                Outcome::Shared(..) => "shared",
            };
            assert_eq!(got, want);
            assert!(flights.is_empty());
        }
        // A leader that never reports lets its waiters go after the timeout.
        let Joined::Lead(_leader) = flights.join(key(5)) else {
            panic!()
        };
        let Joined::Wait(w) = flights.join(key(5)) else {
            panic!()
        };
        assert!(matches!(
            w.wait(Duration::from_millis(20)).await,
            Outcome::NotShared
        ));
    }
}
