//! Rate limits shared through a real Redis (`redis-server` on a loopback
//! port, started here): two gateway instances enforce one combined limit;
//! when Redis stops, each route follows its `allowDegradation`; when it
//! returns, limiting resumes.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use sluicegate::plugins::limit::redis::RedisTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `redis-server` process; killed when dropped.
struct RedisServer {
    port: u16,
    password: Option<&'static str>,
    child: Option<Child>,
}

impl RedisServer {
    async fn start(password: Option<&'static str>) -> RedisServer {
        Self::start_with(password, None).await
    }

    /// A server; with `cluster_dir`, a Redis Cluster node keeping its
    /// cluster state there.
    async fn start_with(
        password: Option<&'static str>,
        cluster_dir: Option<&std::path::Path>,
    ) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            password,
            child: None,
        };
        server.run_with(cluster_dir).await;
        server
    }

    async fn run(&mut self) {
        self.run_with(None).await;
    }

    /// Starts the process on the server's port and waits until it answers.
    async fn run_with(&mut self, cluster_dir: Option<&std::path::Path>) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(dir) = cluster_dir {
            let conf = dir.join(format!("nodes-{}.conf", self.port));
            cmd.args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(conf);
        }
        if let Some(p) = self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers().await {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answers(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr()).await else {
            return false;
        };
        let hello = match self.password {
            Some(p) => format!("AUTH {p}\r\nPING\r\n"),
            None => "PING\r\n".to_owned(),
        };
        if s.write_all(hello.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.windows(5).any(|w| w == b"+PONG") {
            match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
        true
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn two_gateways_share_one_limit_through_redis() {
    let redis = RedisServer::start(Some("s3cret")).await;
    let b = Backend::named("app").await;
    let url = redis.url();
    let m = service("app", &[b.addr])
        + r#"---
apiVersion: v1
kind: Secret
metadata: {name: redis-auth, namespace: default}
type: Opaque
stringData: {redis-password: s3cret}
"# + &limited_route(
        "count",
        &format!(
            "{{limitCount: {{count: 5, timeWindow: 1h, policy: Redis, redis: {{url: \"{url}\", passwordSecretRef: {{name: redis-auth}}}}}}}}"
        ),
        None,
    ) + &limited_route(
        "sliding",
        "{limitCount: {count: 3, timeWindow: 1h, windowType: Sliding, policy: Redis}}",
        None,
    ) + &limited_route(
        "req",
        "{limitReq: {rate: 1, burst: 2, nodelay: true, policy: Redis}}",
        None,
    );
    // The routes without their own settings use the gateway's Redis.
    let config = || {
        let mut c = test_config(1);
        c.translate.redis = Some(RedisTarget::parse(&url, false, Some("s3cret".into())).unwrap());
        c
    };
    let one = TestGateway::start_with(&m, config()).await;
    let two = TestGateway::start_with(&m, config()).await;

    for (host, allowed) in [("count.test", 5), ("sliding.test", 3), ("req.test", 3)] {
        let mut seen = Vec::new();
        for i in 0..allowed + 2 {
            let gw = if i % 2 == 0 { &one } else { &two };
            let r = get(gw.http(), host, "/").await;
            seen.push(r.status.as_u16());
        }
        let mut expected = vec![200; allowed];
        expected.extend([429, 429]);
        assert_eq!(seen, expected, "{host}: one limit across both gateways");
    }
    let r = get(one.http(), "count.test", "/").await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert!(r.header("retry-after").is_some());
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn redis_outage_follows_allow_degradation_and_recovers() {
    let mut redis = RedisServer::start(None).await;
    let b = Backend::named("app").await;
    let url = redis.url();
    let limit = |degrade: bool| {
        format!(
            "{{limitCount: {{count: 100, timeWindow: 1h, policy: Redis, allowDegradation: {degrade}, redis: {{url: \"{url}\", timeout: 200ms}}}}}}"
        )
    };
    let m = service("app", &[b.addr])
        + &limited_route("open", &limit(true), None)
        + &limited_route("closed", &limit(false), None);
    let gw = TestGateway::start(&m).await;
    assert_eq!(
        get(gw.http(), "open.test", "/").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(gw.http(), "closed.test", "/").await.status,
        StatusCode::OK
    );

    redis.stop();
    assert_eq!(
        get(gw.http(), "open.test", "/").await.status,
        StatusCode::OK
    );
    let r = get(gw.http(), "closed.test", "/").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text(), "rate limiter unavailable\n");
    let metrics = admin_get(&gw, "/metrics").await.text();
    assert!(
        metrics.contains("sluicegate_redis_errors_total"),
        "{metrics}"
    );

    // Redis comes back on the same address: limiting resumes by itself.
    redis.run().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(gw.http(), "closed.test", "/").await;
        if r.status == StatusCode::OK {
            assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn limits_work_on_a_redis_cluster() {
    // Three primaries, every slot covered.
    let dir = TempDir::new();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(RedisServer::start_with(None, Some(dir.path())).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
    let status = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli must be installed (it comes with redis-server)");
    assert!(status.success(), "cluster create failed");
    // Wait until the cluster reports itself healthy.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &nodes[0].port.to_string(), "cluster", "info"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
            break;
        }
        assert!(Instant::now() < deadline, "cluster never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let b = Backend::named("app").await;
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let redis = format!(
        "key: {{type: Header, name: x-client}}, redis: {{url: \"{}\", cluster: true}}",
        urls.join(",")
    );
    let m = service("app", &[b.addr])
        + &limited_route(
            "fixed",
            &format!("{{limitCount: {{count: 4, timeWindow: 1h, policy: Redis, {redis}}}}}"),
            None,
        )
        + &limited_route(
            "sliding",
            &format!(
                "{{limitCount: {{count: 4, timeWindow: 1h, windowType: Sliding, policy: Redis, {redis}}}}}"
            ),
            None,
        )
        + &limited_route(
            "req",
            &format!("{{limitReq: {{rate: 1, burst: 3, nodelay: true, policy: Redis, {redis}}}}}"),
            None,
        );
    let one = TestGateway::start(&m).await;
    let two = TestGateway::start(&m).await;
    for host in ["fixed.test", "sliding.test", "req.test"] {
        // Clients' keys land on different slots; each has its own limit.
        for client in ["a", "b", "c", "d"] {
            let mut seen = Vec::new();
            for i in 0..5 {
                let gw = if i % 2 == 0 { &one } else { &two };
                let r = request(gw.http(), "GET", host, "/", &[("x-client", client)]).await;
                seen.push(r.status.as_u16());
            }
            assert_eq!(seen, [200, 200, 200, 200, 429], "{host} {client}");
        }
        // Concurrent clients: their checks share calls, split by slot.
        let mut calls = Vec::new();
        for client in ["e", "f", "g", "h", "i", "j"] {
            for i in 0..6 {
                let gw = if i % 2 == 0 { one.http() } else { two.http() };
                calls.push((
                    client,
                    tokio::spawn(async move {
                        request(gw, "GET", host, "/", &[("x-client", client)]).await
                    }),
                ));
            }
        }
        let mut allowed = std::collections::BTreeMap::<&str, usize>::new();
        for (client, call) in calls {
            if call.await.unwrap().status == StatusCode::OK {
                *allowed.entry(client).or_default() += 1;
            }
        }
        assert!(allowed.values().all(|&n| n == 4), "{host}: {allowed:?}");
        assert_eq!(allowed.len(), 6, "{host}: {allowed:?}");
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// Sends one command to Redis and returns its reply as text (RESP, as
/// received); enough for the few commands these tests need.
async fn redis_command(addr: SocketAddr, args: &[&str]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut cmd = format!("*{}\r\n", args.len());
    for a in args {
        cmd += &format!("${}\r\n{a}\r\n", a.len());
    }
    s.write_all(cmd.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Replies here are short: wait for the first bytes, then for a pause.
    let mut wait = Duration::from_secs(5);
    while let Ok(Ok(n)) = tokio::time::timeout(wait, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        wait = Duration::from_millis(100);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The `_count` and `_sum` of a summary in Prometheus text.
fn summary(metrics: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    };
    (value("count"), value("sum"))
}

#[tokio::test]
async fn checks_of_concurrent_requests_share_calls_and_count_exactly() {
    let redis = RedisServer::start(None).await;
    let b = Backend::named("app").await;
    let settings = format!(
        "policy: Redis, redis: {{url: \"{}\", timeout: 5s}}",
        redis.url()
    );
    let m = service("app", &[b.addr])
        + &limited_route(
            "fixed",
            &format!("{{limitCount: {{count: 30, timeWindow: 1h, {settings}}}}}"),
            None,
        )
        + &limited_route(
            "sliding",
            &format!(
                "{{limitCount: {{count: 30, timeWindow: 1h, windowType: Sliding, {settings}}}}}"
            ),
            None,
        )
        + &limited_route(
            "req",
            &format!("{{limitReq: {{rate: 1, burst: 29, nodelay: true, {settings}}}}}"),
            None,
        )
        + &limited_route(
            "broken",
            &format!("{{limitReq: {{rate: 100, burst: 100, nodelay: true, {settings}}}}}"),
            None,
        );
    let gw = TestGateway::start_with(&m, test_config(1)).await;

    // A first request makes the connection and the `broken` route's key;
    // then that key is made a hash, which its script step cannot read.
    // The key lives only as long as the bucket takes to drain (10 ms at
    // this rate), so it is looked for right after a request, as often as
    // it takes.
    let mut key = None;
    for _ in 0..50 {
        assert_eq!(
            get(gw.http(), "broken.test", "/").await.status,
            StatusCode::OK
        );
        let keys = redis_command(redis.addr(), &["KEYS", "sg:{req:*"]).await;
        key = keys
            .lines()
            .find(|l| l.starts_with("sg:"))
            .map(str::to_owned);
        if key.is_some() {
            break;
        }
    }
    let key = key.expect("a limitReq key after a request");
    redis_command(redis.addr(), &["DEL", &key]).await;
    redis_command(redis.addr(), &["HSET", &key, "not", "a counter"]).await;

    let before = summary(
        &admin_get(&gw, "/metrics").await.text(),
        "sluicegate_redis_batch_checks",
    );
    // Redis holds every command for a moment: the first call waits, and
    // the checks of every other request queue behind it.
    let paused = redis_command(redis.addr(), &["CLIENT", "PAUSE", "500", "ALL"]).await;
    assert!(paused.starts_with("+OK"), "{paused}");
    let mut calls = Vec::new();
    for host in ["fixed.test", "sliding.test", "req.test"] {
        for _ in 0..45 {
            calls.push(tokio::spawn(get(gw.http(), host, "/")));
        }
    }
    for _ in 0..5 {
        calls.push(tokio::spawn(get(gw.http(), "broken.test", "/")));
    }
    let mut statuses = std::collections::HashMap::<(usize, u16), usize>::new();
    for (i, call) in calls.into_iter().enumerate() {
        let status = call.await.unwrap().status.as_u16();
        *statuses.entry((i / 45, status)).or_default() += 1;
    }
    for (route, name) in ["fixed", "sliding", "req"].iter().enumerate() {
        assert_eq!(
            (statuses.get(&(route, 200)), statuses.get(&(route, 429))),
            (Some(&30), Some(&15)),
            "{name}: exactly the limit passes, however the checks were batched: {statuses:?}"
        );
    }
    // The refused step fails its own requests only (no degradation: 503).
    assert_eq!(statuses.get(&(3, 503)), Some(&5), "{statuses:?}");

    let after = summary(
        &admin_get(&gw, "/metrics").await.text(),
        "sluicegate_redis_batch_checks",
    );
    let (calls, checks) = (after.0 - before.0, after.1 - before.1);
    assert_eq!(checks, 140.0, "every check went to Redis");
    assert!(calls <= 10.0, "140 checks took {calls} calls");
    gw.shutdown().await;
}
