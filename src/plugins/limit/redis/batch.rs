//! Several requests' checks in one script call.
//!
//! Each worker thread has one batcher per Redis target and timeout: a
//! task that takes every check queued since its last call and runs them
//! all in one `EVALSHA`. At most [`MAX_IN_FLIGHT`] calls are outstanding,
//! so under load checks queue while the earlier calls travel and the next
//! call carries all of them; a lone request still goes out at once. One
//! call per batch, rather than per request, is what makes Redis-backed
//! limits cheap: the client's encoding, channel hand-offs and timer, and
//! the server's script setup, are paid once for many requests.
//!
//! The script runs the checks in queue order, so two checks of one key in
//! one batch see each other exactly as two separate calls would. A check
//! the server refuses (a key of the wrong type, say) fails alone; a call
//! that fails or times out fails every check it carried, and each request
//! then follows its own `allowDegradation`.
//!
//! In a Redis Cluster one script may only touch keys of one hash slot, so
//! a batch is split by slot. A check's keys share a hash tag, hence a slot.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use redis::cluster_routing::Slot;
use tokio::sync::{Notify, OnceCell, oneshot};
use tracing::warn;

use super::conn::Conn;
use super::{REDIS_BATCH, REDIS_DURATION, REDIS_ERRORS, RedisTarget};

/// Calls one batcher keeps outstanding at once.
const MAX_IN_FLIGHT: usize = 2;
/// Checks carried by one call; more wait for the next.
const MAX_BATCH: usize = 256;
/// A batcher with nothing to send for this long stops and closes its
/// connection; the next check starts another.
const IDLE: Duration = Duration::from_secs(120);

/// One rate-limit check, as the script reads it.
#[derive(Debug)]
pub enum Check {
    /// Counts one request in a fixed window's counter.
    Fixed { key: String, ttl_ms: u64 },
    /// Counts one request if the current window plus the weighted
    /// previous window stays within `limit`.
    Sliding {
        current: String,
        previous: String,
        limit: u64,
        ttl_ms: u64,
        /// Share of the previous window still counted, in millionths.
        weight: u64,
    },
    /// One GCRA step on the server's clock (microseconds).
    Gcra {
        key: String,
        interval_us: u64,
        tolerance_us: u64,
    },
    /// Reads a budget's use: the current window plus the weighted
    /// previous one (a fixed window names its current key twice, weight 0).
    Peek {
        current: String,
        previous: String,
        weight: u64,
    },
    /// Adds `cost` to a window's counter, whatever the limit.
    Charge { key: String, cost: u64, ttl_ms: u64 },
}

/// What the script answered for one check: three integers whose meaning
/// depends on the check (see [`script`]).
pub type Answer = [i64; 3];

/// Why a check has no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The call failed, or the server refused this check.
    Error,
    /// The call took longer than the timeout.
    Timeout,
}

type Reply = Result<Answer, Failure>;
type Waiting = (Check, oneshot::Sender<Reply>);

/// Checks waiting for a call, shared by the requests that queue them and
/// the task that sends them.
struct Batcher {
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Set when the task stops (idle, or its runtime shut down): nothing
    /// queued afterwards would be sent, so requests start a new batcher.
    closed: bool,
}

impl Batcher {
    fn new() -> Batcher {
        Batcher {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `check`, or hands it back if the batcher has stopped.
    fn push(&self, check: Check) -> Result<oneshot::Receiver<Reply>, Check> {
        let (tx, rx) = oneshot::channel();
        let was_empty = {
            let mut q = self.lock();
            if q.closed {
                return Err(check);
            }
            q.waiting.push((check, tx));
            q.waiting.len() == 1
        };
        // The task drains the whole queue whenever it runs, so only the
        // first check of a new batch needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        Ok(rx)
    }

    fn take(&self) -> Vec<Waiting> {
        let mut q = self.lock();
        if q.waiting.len() <= MAX_BATCH {
            std::mem::take(&mut q.waiting)
        } else {
            q.waiting.drain(..MAX_BATCH).collect()
        }
    }

    /// Stops taking checks if none is waiting; true if it did.
    fn close_if_idle(&self) -> bool {
        let mut q = self.lock();
        q.closed = q.waiting.is_empty();
        q.closed
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Closes the batcher when its task ends or is dropped; checks still
/// queued then fail (their senders drop).
struct Closer(Arc<Batcher>);

impl Drop for Closer {
    fn drop(&mut self) {
        let waiting = {
            let mut q = self.0.lock();
            q.closed = true;
            std::mem::take(&mut q.waiting)
        };
        drop(waiting);
    }
}

thread_local! {
    /// This thread's batchers, by target id and timeout. Few entries: a
    /// scan beats hashing.
    static BATCHERS: RefCell<Vec<(u64, Duration, Arc<Batcher>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `check` in the next call of this thread's batcher for `target`.
pub async fn check(target: &RedisTarget, target_id: u64, timeout: Duration, check: Check) -> Reply {
    let mut check = check;
    // A batcher that stopped hands the check back; the next lookup
    // starts a new one, so the second push succeeds.
    for _ in 0..2 {
        match batcher(target, target_id, timeout).push(check) {
            Ok(rx) => return rx.await.unwrap_or(Err(Failure::Error)),
            Err(c) => {
                forget(target_id, timeout);
                check = c;
            }
        }
    }
    Err(Failure::Error)
}

/// This thread's batcher for `target`, started on first use on the
/// current runtime. It may have stopped since: [`Batcher::push`] says so,
/// without a second lock per request here.
fn batcher(target: &RedisTarget, target_id: u64, timeout: Duration) -> Arc<Batcher> {
    BATCHERS.with(|cell| {
        let mut list = cell.borrow_mut();
        if let Some((_, _, b)) = list
            .iter()
            .find(|(id, t, _)| *id == target_id && *t == timeout)
        {
            return b.clone();
        }
        let b = Arc::new(Batcher::new());
        tokio::spawn(run(Closer(b.clone()), target.clone(), timeout));
        list.push((target_id, timeout, b.clone()));
        b
    })
}

/// Drops this thread's stopped batcher for `target`, so that the next
/// lookup starts a new one.
fn forget(target_id: u64, timeout: Duration) {
    BATCHERS.with(|cell| {
        cell.borrow_mut()
            .retain(|(id, t, b)| !(*id == target_id && *t == timeout && b.is_closed()));
    });
}

/// The batcher's task: sends what is queued whenever fewer than
/// [`MAX_IN_FLIGHT`] calls are outstanding, and stops (closing its
/// connection) after [`IDLE`] without a check.
async fn run(closer: Closer, target: RedisTarget, timeout: Duration) {
    let batcher = &closer.0;
    let conn: OnceCell<Conn> = OnceCell::new();
    let mut in_flight = FuturesUnordered::new();
    // One timer for the whole idle period, not one per wait.
    let idle = tokio::time::sleep(IDLE);
    tokio::pin!(idle);
    let mut sent = false;
    loop {
        while in_flight.len() < MAX_IN_FLIGHT {
            let batch = batcher.take();
            if batch.is_empty() {
                break;
            }
            sent = true;
            in_flight.push(send(&conn, &target, timeout, batch));
        }
        tokio::select! {
            _ = batcher.wake.notified(), if in_flight.len() < MAX_IN_FLIGHT => {}
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            () = &mut idle, if in_flight.is_empty() => {
                if !sent && batcher.close_if_idle() {
                    return;
                }
                sent = false;
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
            }
        }
    }
}

/// Answers every check of `batch`: one call, or one per slot in a
/// cluster, all within `timeout` (connecting included).
async fn send(conn: &OnceCell<Conn>, target: &RedisTarget, timeout: Duration, batch: Vec<Waiting>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let started = Instant::now();
    let connected = tokio::time::timeout_at(
        deadline,
        conn.get_or_try_init(|| Conn::connect(target, timeout)),
    )
    .await;
    match connected {
        Ok(Ok(Conn::Single(c))) => group(c.clone(), batch, deadline, started, timeout).await,
        Ok(Ok(Conn::Cluster(c))) => {
            let calls = by_slot(batch)
                .into_iter()
                .map(|g| group(c.clone(), g, deadline, started, timeout));
            futures_util::future::join_all(calls).await;
        }
        Ok(Err(e)) => {
            warn!(error = %e, checks = batch.len(), "rate limiter: cannot connect to Redis");
            fail(batch, Failure::Error);
        }
        Err(_) => {
            warn!(
                ?timeout,
                checks = batch.len(),
                "rate limiter: Redis connection timed out"
            );
            fail(batch, Failure::Timeout);
        }
    }
}

/// One script call for checks that may share it.
async fn group<C: redis::aio::ConnectionLike + Send>(
    mut conn: C,
    batch: Vec<Waiting>,
    deadline: tokio::time::Instant,
    started: Instant,
    timeout: Duration,
) {
    let cmd = command(&batch);
    let result = tokio::time::timeout_at(deadline, async {
        match cmd.query_async::<Vec<i64>>(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script().prepare_invoke().load_async(&mut conn).await?;
                cmd.query_async::<Vec<i64>>(&mut conn).await
            }
            other => other,
        }
    })
    .await;
    metric(&DURATION, || metrics::histogram!(REDIS_DURATION))
        .record(started.elapsed().as_secs_f64());
    metric(&BATCH, || metrics::histogram!(REDIS_BATCH)).record(batch.len() as f64);
    let failure = match result {
        Ok(Ok(values)) if values.len() == batch.len() * 3 => {
            for ((_, tx), a) in batch.into_iter().zip(values.chunks_exact(3)) {
                let answer = if a[0] < 0 {
                    Err(Failure::Error)
                } else {
                    Ok([a[0], a[1], a[2]])
                };
                let _ = tx.send(answer);
            }
            return;
        }
        Ok(Ok(values)) => {
            warn!(
                checks = batch.len(),
                values = values.len(),
                "rate limiter: Redis answered the wrong number of values"
            );
            metrics::counter!(REDIS_ERRORS, "reason" => "error").increment(1);
            Failure::Error
        }
        Ok(Err(e)) => {
            warn!(error = %e, checks = batch.len(), "rate limiter: Redis call failed");
            metrics::counter!(REDIS_ERRORS, "reason" => "error").increment(1);
            Failure::Error
        }
        Err(_) => {
            warn!(
                ?timeout,
                checks = batch.len(),
                "rate limiter: Redis call timed out"
            );
            metrics::counter!(REDIS_ERRORS, "reason" => "timeout").increment(1);
            Failure::Timeout
        }
    };
    fail(batch, failure);
}

fn fail(batch: Vec<Waiting>, failure: Failure) {
    for (_, tx) in batch {
        // The request may have gone (client closed): nothing to tell.
        let _ = tx.send(Err(failure));
    }
}

static DURATION: OnceLock<metrics::Histogram> = OnceLock::new();
static BATCH: OnceLock<metrics::Histogram> = OnceLock::new();

/// Registered once: looking a histogram up per call costs more than
/// recording into it.
fn metric(
    cell: &'static OnceLock<metrics::Histogram>,
    make: impl FnOnce() -> metrics::Histogram,
) -> &'static metrics::Histogram {
    cell.get_or_init(make)
}

/// Splits a cluster batch into groups whose keys share a slot.
fn by_slot(batch: Vec<Waiting>) -> Vec<Vec<Waiting>> {
    if batch.len() == 1 {
        return vec![batch];
    }
    let mut groups: HashMap<Slot, Vec<Waiting>> = HashMap::new();
    for w in batch {
        groups
            .entry(Slot::for_key(w.0.first_key()))
            .or_default()
            .push(w);
    }
    groups.into_values().collect()
}

impl Check {
    fn first_key(&self) -> &str {
        match self {
            Check::Fixed { key, .. } | Check::Gcra { key, .. } | Check::Charge { key, .. } => key,
            Check::Sliding { current, .. } | Check::Peek { current, .. } => current,
        }
    }

    /// The check's keys, in the order the script reads them.
    fn keys(&self) -> [Option<&str>; 2] {
        match self {
            Check::Fixed { key, .. } | Check::Gcra { key, .. } | Check::Charge { key, .. } => {
                [Some(key), None]
            }
            Check::Sliding {
                current, previous, ..
            }
            | Check::Peek {
                current, previous, ..
            } => [Some(current), Some(previous)],
        }
    }
}

/// `EVALSHA` of [`script`] with every check's keys, then every check's
/// arguments, each led by its kind.
fn command(batch: &[Waiting]) -> redis::Cmd {
    let keys: usize = batch
        .iter()
        .map(|(c, _)| c.keys().iter().flatten().count())
        .sum();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script().get_hash()).arg(keys);
    for (check, _) in batch {
        for key in check.keys().into_iter().flatten() {
            cmd.arg(key.as_bytes());
        }
    }
    for (check, _) in batch {
        match *check {
            Check::Fixed { ttl_ms, .. } => cmd.arg("f").arg(ttl_ms),
            Check::Sliding {
                limit,
                ttl_ms,
                weight,
                ..
            } => cmd.arg("s").arg(limit).arg(ttl_ms).arg(weight),
            Check::Gcra {
                interval_us,
                tolerance_us,
                ..
            } => cmd.arg("g").arg(interval_us).arg(tolerance_us),
            Check::Peek { weight, .. } => cmd.arg("p").arg(weight),
            Check::Charge { cost, ttl_ms, .. } => cmd.arg("c").arg(cost).arg(ttl_ms),
        };
    }
    cmd
}

/// The one script every batch runs. For each check it appends three
/// integers; a negative first one means the server refused that check.
///
/// - `f` KEYS: counter; ARGV: lifetime (ms). Answers the count after this
///   request.
/// - `s` KEYS: current and previous window; ARGV: limit, lifetime (ms),
///   share of the previous window still counted (millionths). Answers
///   allowed (1/0) and the weighted count including this request if
///   allowed.
/// - `g` KEYS: theoretical arrival time (us); ARGV: interval and
///   tolerance (us). Answers allowed, how long until this request's turn,
///   and how far the bucket now reaches into the future (us), all on the
///   server's clock, so replicas agree.
/// - `p` KEYS: current and previous window; ARGV: share of the previous
///   window still counted (millionths). Answers 1 and the weighted use.
/// - `c` KEYS: counter; ARGV: cost, lifetime (ms). Answers the count after
///   adding the cost; the lifetime is set when the counter has none.
pub fn script() -> &'static redis::Script {
    static S: OnceLock<redis::Script> = OnceLock::new();
    S.get_or_init(|| {
        redis::Script::new(
            r"local out, k, a, now = {}, 1, 1, nil
local function put(x, y, z) out[#out+1] = x; out[#out+1] = y; out[#out+1] = z end
local function num(v)
  if type(v) == 'table' then return nil end
  return tonumber(v or '0')
end
while a <= #ARGV do
  local op = ARGV[a]
  if op == 'f' then
    local c = redis.pcall('INCR', KEYS[k])
    if type(c) ~= 'number' then put(-1, 0, 0)
    else
      if c == 1 then redis.call('PEXPIRE', KEYS[k], ARGV[a+1]) end
      put(c, 0, 0)
    end
    k = k + 1; a = a + 2
  elseif op == 's' then
    local cur = num(redis.pcall('GET', KEYS[k]))
    local prev = num(redis.pcall('GET', KEYS[k+1]))
    if cur == nil or prev == nil then put(-1, 0, 0)
    else
      local used = math.floor(prev * tonumber(ARGV[a+3]) / 1000000) + cur
      if used + 1 > tonumber(ARGV[a+1]) then put(0, used, 0)
      else
        if redis.call('INCR', KEYS[k]) == 1 then redis.call('PEXPIRE', KEYS[k], ARGV[a+2]) end
        put(1, used + 1, 0)
      end
    end
    k = k + 2; a = a + 4
  elseif op == 'p' then
    local cur = num(redis.pcall('GET', KEYS[k]))
    local prev = num(redis.pcall('GET', KEYS[k+1]))
    if cur == nil or prev == nil then put(-1, 0, 0)
    else put(1, math.floor(prev * tonumber(ARGV[a+1]) / 1000000) + cur, 0) end
    k = k + 2; a = a + 2
  elseif op == 'c' then
    local c = redis.pcall('INCRBY', KEYS[k], ARGV[a+1])
    if type(c) ~= 'number' then put(-1, 0, 0)
    else
      if redis.call('PTTL', KEYS[k]) < 0 then redis.call('PEXPIRE', KEYS[k], ARGV[a+2]) end
      put(c, 0, 0)
    end
    k = k + 1; a = a + 3
  else
    if now == nil then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    local interval, tolerance = tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
    local tat = num(redis.pcall('GET', KEYS[k]))
    if tat == nil then put(-1, 0, 0)
    else
      if tat < now then tat = now end
      if tat - now > tolerance then put(0, 0, tat - now)
      else
        local new_tat = tat + interval
        redis.call('SET', KEYS[k], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
        put(1, tat - now, new_tat - now)
      end
    end
    k = k + 1; a = a + 3
  end
end
return out",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(key: &str) -> Check {
        Check::Fixed {
            key: key.into(),
            ttl_ms: 1000,
        }
    }

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".into(),
            })
            .collect()
    }

    #[test]
    fn a_stopped_batcher_hands_checks_back_and_fails_the_queued_ones() {
        let b = Arc::new(Batcher::new());
        let mut queued = b.push(fixed("sg:{a}:1")).unwrap();
        assert!(!b.close_if_idle(), "a check is waiting");
        drop(Closer(b.clone()));
        assert!(b.is_closed());
        assert!(matches!(
            queued.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(b.push(fixed("sg:{a}:1")).is_err());
    }

    #[tokio::test]
    async fn a_stopped_batcher_is_replaced_on_the_next_lookup() {
        let target = RedisTarget::parse("redis://127.0.0.1:1", false, None).unwrap();
        let t = Duration::from_millis(50);
        let first = batcher(&target, 7, t);
        assert!(first.close_if_idle());
        assert!(Arc::ptr_eq(&first, &batcher(&target, 7, t)));
        forget(7, t);
        let second = batcher(&target, 7, t);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.push(fixed("sg:{a}:1")).is_ok());
    }

    #[test]
    fn one_call_carries_at_most_max_batch_checks() {
        let b = Batcher::new();
        let _rx: Vec<_> = (0..MAX_BATCH + 3)
            .map(|i| b.push(fixed(&format!("sg:{{k}}:{i}"))).unwrap())
            .collect();
        assert_eq!(b.take().len(), MAX_BATCH);
        assert_eq!(b.take().len(), 3);
        assert!(b.take().is_empty());
        assert!(b.close_if_idle());
    }

    #[test]
    fn the_command_lists_every_key_then_every_check_in_order() {
        let b = Batcher::new();
        let _a = b.push(fixed("sg:{a}:7")).unwrap();
        let _b = b.push(Check::Sliding {
            current: "sg:{b}:7".into(),
            previous: "sg:{b}:6".into(),
            limit: 10,
            ttl_ms: 2000,
            weight: 250_000,
        });
        let _c = b.push(Check::Gcra {
            key: "sg:{c}".into(),
            interval_us: 500,
            tolerance_us: 1500,
        });
        let cmd = command(&b.take());
        assert_eq!(
            args(&cmd),
            [
                "EVALSHA",
                script().get_hash(),
                "4",
                "sg:{a}:7",
                "sg:{b}:7",
                "sg:{b}:6",
                "sg:{c}",
                "f",
                "1000",
                "s",
                "10",
                "2000",
                "250000",
                "g",
                "500",
                "1500"
            ]
        );
    }

    #[test]
    fn a_cluster_batch_is_split_by_slot() {
        let b = Batcher::new();
        let _rx: Vec<_> = ["sg:{a}:1", "sg:{b}:1", "sg:{a}:2", "sg:{b}:2", "sg:{a}:3"]
            .iter()
            .map(|k| b.push(fixed(k)).unwrap())
            .collect();
        let mut sizes: Vec<usize> = by_slot(b.take()).iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [2, 3]);
    }
}
