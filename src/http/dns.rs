//! The gateway's DNS resolver, shared by everything that turns a name into
//! addresses: upstreams named by DNS (ExternalName Services, backends
//! with a `host`) and the gateway's own calls (forwardAuth, JWKS).
//!
//! Lookups go through hickory-resolver, because the system resolver tells
//! no TTL. It reads `/etc/resolv.conf` (name servers, search domains,
//! `ndots`) and `/etc/hosts`, like the system resolver would;
//! [`DnsSettings::server`] replaces the name servers.
//!
//! hickory runs its connections to name servers as tasks of the runtime
//! that first uses it, and the gateway runs several runtimes: one per
//! proxy worker thread besides the main one. A resolver used from all of
//! them would lose its connections, and with them every lookup, when the
//! runtime that happened to open them ends. So one task owns the
//! resolver, on the runtime that started it, and every lookup is a
//! message to that task ([`Resolver`] is the handle to it); the answer
//! comes back on a oneshot channel, from whatever runtime asked.
//!
//! [`Resolver::resolve`] adds a small cache in front, for calls made per
//! request: an answer is kept for its records' TTL, clamped to
//! [`DnsSettings::min_ttl`] .. [`DnsSettings::max_ttl`], so that a name
//! costs no message per call, yet a moved service is followed once its
//! records say so. A failed lookup falls back on the last answer, if there
//! was one, as the upstreams named by DNS do: a flapping DNS server does
//! not take a working service away.
//!
//! The gateway installs its resolver as the default of the process and of
//! its worker threads ([`install`], [`set_thread_default`]); without one
//! (a plugin used outside a gateway), names go to the system resolver
//! through [`tokio::net::lookup_host`], cached for [`FALLBACK_TTL`].

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use foldhash::HashMap;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, warn};

/// How names are resolved.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// The name server to ask instead of those of `/etc/resolv.conf`.
    pub server: Option<SocketAddr>,
    /// Shortest time between two lookups of a name, whatever its TTL.
    pub min_ttl: Duration,
    /// Longest time an answer is used before the name is looked up again.
    pub max_ttl: Duration,
    /// Longest wait between retries of a name whose lookups fail.
    pub max_backoff: Duration,
    /// Time to wait for one answer from a name server.
    pub timeout: Duration,
    /// Tries of each name server per lookup.
    pub attempts: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            server: None,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(300),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(3),
            attempts: 2,
        }
    }
}

/// How long the system resolver's answers are kept: it tells no TTL, so
/// short, to follow a moved service quickly, yet not a lookup per call.
pub const FALLBACK_TTL: Duration = Duration::from_secs(5);

/// Names kept in a cache at most; beyond, expired answers are dropped
/// first, then all. Names come from the configuration, so this is only a
/// bound against surprises.
const MAX_NAMES: usize = 1024;

/// An answer: the addresses, sorted and without duplicates, and how long
/// the records said they are valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    pub ttl: Duration,
}

/// Why a name could not be resolved.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("{0}")]
    Failed(String),
    #[error("no A or AAAA records")]
    NoAddresses,
    /// The task owning the resolver is gone (its runtime ended).
    #[error("the DNS resolver has stopped")]
    Stopped,
}

/// What answers lookups: hickory, or a stand-in in tests.
trait Backend: Send + Sync + 'static {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>>;
}

impl Backend for TokioResolver {
    fn lookup<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>> {
        Box::pin(async move {
            let found = self.lookup_ip(name).await.map_err(|e| e.to_string())?;
            let ttl = found
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            let mut addrs: Vec<IpAddr> = found.iter().collect();
            addrs.sort_unstable();
            addrs.dedup();
            Ok(Answer { addrs, ttl })
        })
    }
}

/// A resolver that could not be built: every lookup fails with why.
struct Broken(String);

impl Backend for Broken {
    fn lookup<'a>(
        &'a self,
        _: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>> {
        Box::pin(std::future::ready(Err(self.0.clone())))
    }
}

/// Builds hickory's resolver from `settings`.
fn build(settings: &DnsSettings) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match settings.server {
        Some(addr) => {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            let server = NameServerConfig::new(addr.ip(), true, connections);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                provider,
            )
        }
        None => TokioResolver::builder(provider.clone()).unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the system DNS configuration; only /etc/hosts resolves names");
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(Vec::new()), provider)
        }),
    };
    let opts = builder.options_mut();
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = settings.timeout;
    opts.attempts = settings.attempts;
    // hickory's own cache must not answer for longer than the callers
    // wait, nor repeat a failure to a retry.
    opts.positive_max_ttl = Some(settings.max_ttl);
    opts.negative_max_ttl = Some(settings.min_ttl);
    builder.build()
}

/// A question for the task that owns the resolver.
struct Ask {
    name: Box<str>,
    reply: oneshot::Sender<Result<Answer, String>>,
}

/// Answers kept for their TTL.
#[derive(Debug)]
struct Cache {
    min_ttl: Duration,
    max_ttl: Duration,
    names: Mutex<HashMap<Box<str>, Cached>>,
}

#[derive(Debug)]
struct Cached {
    addrs: Arc<[IpAddr]>,
    expires: Instant,
}

impl Cache {
    fn new(min_ttl: Duration, max_ttl: Duration) -> Self {
        Cache {
            min_ttl,
            max_ttl: max_ttl.max(min_ttl),
            names: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Cached>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for `name` while it is valid.
    fn fresh(&self, name: &str, now: Instant) -> Option<Arc<[IpAddr]>> {
        let names = self.lock();
        let c = names.get(name)?;
        (now < c.expires).then(|| c.addrs.clone())
    }

    /// The last answer for `name`, however old.
    fn last(&self, name: &str) -> Option<Arc<[IpAddr]>> {
        self.lock().get(name).map(|c| c.addrs.clone())
    }

    /// Keeps `addrs` for `ttl`, clamped.
    fn store(&self, name: &str, addrs: Arc<[IpAddr]>, ttl: Duration, now: Instant) {
        let expires = now + ttl.clamp(self.min_ttl, self.max_ttl);
        let mut names = self.lock();
        if names.len() >= MAX_NAMES && !names.contains_key(name) {
            names.retain(|_, c| now < c.expires);
            if names.len() >= MAX_NAMES {
                names.clear();
            }
        }
        names.insert(name.into(), Cached { addrs, expires });
    }
}

struct Inner {
    asks: mpsc::UnboundedSender<Ask>,
    cache: Cache,
}

/// A handle to the task that owns a resolver; cheap to clone, usable from
/// any runtime. The task ends with its runtime, or once every handle is
/// gone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// Builds a resolver from `settings` and starts the task owning it on
    /// the current runtime. A resolver that cannot be built is logged, and
    /// its lookups fail saying why.
    pub fn start(settings: &DnsSettings) -> Resolver {
        let backend: Arc<dyn Backend> = match build(settings) {
            Ok(r) => Arc::new(r),
            Err(e) => {
                error!(error = %e, "cannot build the DNS resolver; names do not resolve");
                Arc::new(Broken(format!("no DNS resolver: {e}")))
            }
        };
        Self::with_backend(backend, settings.min_ttl, settings.max_ttl)
    }

    fn with_backend(backend: Arc<dyn Backend>, min_ttl: Duration, max_ttl: Duration) -> Resolver {
        let (asks, mut rx) = mpsc::unbounded_channel::<Ask>();
        tokio::spawn(async move {
            while let Some(ask) = rx.recv().await {
                let backend = backend.clone();
                // One task per lookup: a slow name does not hold up others.
                tokio::spawn(async move {
                    let answer = backend.lookup(&ask.name).await;
                    let _ = ask.reply.send(answer);
                });
            }
        });
        Resolver {
            inner: Arc::new(Inner {
                asks,
                cache: Cache::new(min_ttl, max_ttl),
            }),
        }
    }

    /// A resolver that answers every name with `addrs`, for tests of its
    /// users.
    #[cfg(test)]
    pub(crate) fn fixed(addrs: Vec<IpAddr>) -> Resolver {
        struct Fixed(Vec<IpAddr>);
        impl Backend for Fixed {
            fn lookup<'a>(
                &'a self,
                _: &'a str,
            ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>> {
                Box::pin(std::future::ready(Ok(Answer {
                    addrs: self.0.clone(),
                    ttl: Duration::from_secs(60),
                })))
            }
        }
        Self::with_backend(
            Arc::new(Fixed(addrs)),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
    }

    /// Looks `name` up, without the cache.
    pub async fn lookup(&self, name: &str) -> Result<Answer, LookupError> {
        let (reply, answer) = oneshot::channel();
        let ask = Ask {
            name: name.into(),
            reply,
        };
        self.inner
            .asks
            .send(ask)
            .map_err(|_| LookupError::Stopped)?;
        match answer.await {
            Ok(Ok(a)) if a.addrs.is_empty() => Err(LookupError::NoAddresses),
            Ok(Ok(a)) => Ok(a),
            Ok(Err(why)) => Err(LookupError::Failed(why)),
            Err(_) => Err(LookupError::Stopped),
        }
    }

    /// The addresses of `name`, from the cache while its answer is valid.
    /// When a lookup fails, the last answer is used, however old.
    pub async fn resolve(&self, name: &str) -> Result<Arc<[IpAddr]>, LookupError> {
        let cache = &self.inner.cache;
        if let Some(addrs) = cache.fresh(name, Instant::now()) {
            return Ok(addrs);
        }
        match self.lookup(name).await {
            Ok(answer) => {
                let addrs: Arc<[IpAddr]> = answer.addrs.into();
                cache.store(name, addrs.clone(), answer.ttl, Instant::now());
                Ok(addrs)
            }
            Err(e) => match cache.last(name) {
                Some(addrs) if e != LookupError::Stopped => {
                    debug!(name, error = %e, "DNS lookup failed; using the last answer");
                    Ok(addrs)
                }
                _ => Err(e),
            },
        }
    }
}

static DEFAULT: ArcSwapOption<Inner> = ArcSwapOption::const_empty();

thread_local! {
    static THREAD_DEFAULT: RefCell<Option<Resolver>> = const { RefCell::new(None) };
}

/// Makes `resolver` the one [`resolve`] uses, in every thread that has no
/// resolver of its own. The last one installed wins.
pub fn install(resolver: &Resolver) {
    DEFAULT.store(Some(resolver.inner.clone()));
}

/// Removes `resolver` as the default, if it still is.
pub fn uninstall(resolver: &Resolver) {
    let current = DEFAULT.load();
    if current
        .as_ref()
        .is_some_and(|c| Arc::ptr_eq(c, &resolver.inner))
    {
        DEFAULT.compare_and_swap(&*current, None);
    }
}

/// Gives the current thread its own resolver (a proxy worker, its
/// gateway's), ahead of the process default.
pub fn set_thread_default(resolver: Option<Resolver>) {
    THREAD_DEFAULT.with(|r| *r.borrow_mut() = resolver);
}

/// The resolver for this thread: its own, else the process default.
pub fn current() -> Option<Resolver> {
    THREAD_DEFAULT
        .with(|r| r.borrow().clone())
        .or_else(|| DEFAULT.load_full().map(|inner| Resolver { inner }))
}

/// The system resolver's answers, for when no resolver is installed.
fn fallback_cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Cache::new(FALLBACK_TTL, FALLBACK_TTL))
}

/// The addresses of `name` with `port`, through the installed resolver,
/// or the system's when none is installed or it has stopped.
pub async fn resolve(name: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
    let with_port = |addrs: &[IpAddr]| addrs.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    if let Some(resolver) = current() {
        match resolver.resolve(name).await {
            Err(LookupError::Stopped) => {}
            other => return other.map(|a| with_port(&a)),
        }
    }
    let cache = fallback_cache();
    if let Some(addrs) = cache.fresh(name, Instant::now()) {
        return Ok(with_port(&addrs));
    }
    let mut addrs: Vec<IpAddr> = tokio::net::lookup_host((name, port))
        .await
        .map_err(|e| LookupError::Failed(e.to_string()))?
        .map(|a| a.ip())
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(LookupError::NoAddresses);
    }
    let out = with_port(&addrs);
    cache.store(name, addrs.into(), FALLBACK_TTL, Instant::now());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Answers every name with the address and TTL set, counting lookups.
    struct Fake {
        answer: Mutex<Result<Answer, String>>,
        lookups: AtomicUsize,
    }

    impl Fake {
        fn new(ip: [u8; 4], ttl: u64) -> Arc<Fake> {
            Arc::new(Fake {
                answer: Mutex::new(Ok(answer(ip, ttl))),
                lookups: AtomicUsize::new(0),
            })
        }

        fn set(&self, a: Result<Answer, String>) {
            *self.answer.lock().unwrap() = a;
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    fn answer(ip: [u8; 4], ttl: u64) -> Answer {
        Answer {
            addrs: vec![IpAddr::from(ip)],
            ttl: Duration::from_secs(ttl),
        }
    }

    impl Backend for Fake {
        fn lookup<'a>(
            &'a self,
            _: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<Answer, String>> + Send + 'a>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let a = self.answer.lock().unwrap().clone();
            Box::pin(std::future::ready(a))
        }
    }

    fn resolver(fake: &Arc<Fake>, min: u64, max: u64) -> Resolver {
        Resolver::with_backend(
            fake.clone(),
            Duration::from_secs(min),
            Duration::from_secs(max),
        )
    }

    async fn resolved(r: &Resolver) -> Vec<IpAddr> {
        r.resolve("svc.test").await.unwrap().to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_their_ttl() {
        let fake = Fake::new([10, 0, 0, 1], 30);
        let r = resolver(&fake, 1, 300);
        assert_eq!(resolved(&r).await, [IpAddr::from([10, 0, 0, 1])]);
        fake.set(Ok(answer([10, 0, 0, 2], 30)));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(resolved(&r).await, [IpAddr::from([10, 0, 0, 1])]);
        assert_eq!(fake.lookups(), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(resolved(&r).await, [IpAddr::from([10, 0, 0, 2])]);
        assert_eq!(fake.lookups(), 2);
        // Other names have their own entries.
        r.resolve("other.test").await.unwrap();
        assert_eq!(fake.lookups(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn ttls_are_clamped_to_the_settings() {
        // A TTL of 0 is held for min_ttl (5 s), not asked for per call.
        let fake = Fake::new([10, 0, 0, 1], 0);
        let r = resolver(&fake, 5, 60);
        for _ in 0..3 {
            resolved(&r).await;
        }
        tokio::time::advance(Duration::from_millis(4900)).await;
        resolved(&r).await;
        assert_eq!(fake.lookups(), 1);
        tokio::time::advance(Duration::from_millis(200)).await;
        resolved(&r).await;
        assert_eq!(fake.lookups(), 2);

        // A TTL of a day is held for max_ttl (60 s) only.
        fake.set(Ok(answer([10, 0, 0, 3], 86_400)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(resolved(&r).await, [IpAddr::from([10, 0, 0, 3])]);
        assert_eq!(fake.lookups(), 3);
        tokio::time::advance(Duration::from_secs(59)).await;
        resolved(&r).await;
        assert_eq!(fake.lookups(), 3);
        tokio::time::advance(Duration::from_secs(2)).await;
        resolved(&r).await;
        assert_eq!(fake.lookups(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_falls_back_on_the_last_answer() {
        let fake = Fake::new([10, 0, 0, 1], 1);
        let r = resolver(&fake, 1, 60);
        resolved(&r).await;
        fake.set(Err("timed out".into()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(resolved(&r).await, [IpAddr::from([10, 0, 0, 1])]);
        // Tried again on the next call, not cached as a success.
        resolved(&r).await;
        assert_eq!(fake.lookups(), 3);
        // A name never answered has nothing to fall back on.
        assert_eq!(
            r.resolve("new.test").await.unwrap_err(),
            LookupError::Failed("timed out".into())
        );
        // Empty answers are failures too.
        fake.set(Ok(Answer {
            addrs: Vec::new(),
            ttl: Duration::from_secs(10),
        }));
        assert_eq!(
            r.lookup("svc.test").await.unwrap_err(),
            LookupError::NoAddresses
        );
    }

    #[test]
    fn a_resolver_whose_runtime_ended_says_so() {
        let fake = Fake::new([10, 0, 0, 1], 30);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async { resolver(&fake, 1, 60) });
        drop(rt);
        let other = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let got = other.block_on(r.lookup("svc.test"));
        assert_eq!(got.unwrap_err(), LookupError::Stopped);
    }

    #[test]
    fn lookups_from_other_runtimes_run_on_the_owners() {
        let fake = Fake::new([10, 0, 0, 7], 30);
        let owner = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let r = owner.block_on(async { resolver(&fake, 1, 60) });
        for _ in 0..3 {
            // A runtime per call, each gone before the next: the resolver
            // does not depend on any of them.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let got = rt.block_on(r.lookup("svc.test")).unwrap();
            assert_eq!(got.addrs, [IpAddr::from([10, 0, 0, 7])]);
        }
        assert_eq!(fake.lookups(), 3);
    }
}
