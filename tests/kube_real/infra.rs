//! The pieces a test against a real control plane needs: the control
//! plane's start and stop scripts, `kubectl`, backends in a network
//! namespace, controller processes, and a small blocking HTTP client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the control plane lives and how to reach it.
pub struct Plane {
    pub dir: PathBuf,
    pub scripts: PathBuf,
    pub port: u16,
    pub kubeconfig: PathBuf,
}

impl Plane {
    /// From `K8S_DIR`; `None` (with the reason printed) when unset.
    pub fn from_env() -> Option<Plane> {
        let Some(dir) = std::env::var_os("K8S_DIR") else {
            println!(
                "SKIPPED: K8S_DIR is not set. These tests need a kube-apiserver and etcd \
                 started by ../shared/k8s/k8s-start.sh (see its README); they run as root \
                 (network namespace for backends)."
            );
            return None;
        };
        let dir = PathBuf::from(dir);
        let scripts = std::env::var_os("K8S_SCRIPTS").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/k8s"),
            PathBuf::from,
        );
        let port = std::env::var("APISERVER_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(16443);
        Some(Plane {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            scripts,
            port,
        })
    }

    fn script(&self, name: &str, fresh: bool) -> Command {
        let mut c = Command::new("bash");
        c.arg(self.scripts.join(name))
            .env("K8S_DIR", &self.dir)
            .env("APISERVER_PORT", self.port.to_string())
            .env(
                "ETCD_PORT",
                std::env::var("ETCD_PORT").unwrap_or("12379".into()),
            )
            .env(
                "ETCD_PEER_PORT",
                std::env::var("ETCD_PEER_PORT").unwrap_or("12380".into()),
            )
            .env("FRESH", if fresh { "1" } else { "0" });
        c
    }

    /// Starts etcd and the API server; returns once `/readyz` says ok.
    pub fn start(&self, fresh: bool) {
        let out = self
            .script("k8s-start.sh", fresh)
            .output()
            .expect("run k8s-start.sh");
        assert!(
            out.status.success(),
            "k8s-start.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the control plane in the background (for measuring when it
    /// turns ready).
    pub fn start_background(&self) -> Child {
        self.script("k8s-start.sh", false)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run k8s-start.sh")
    }

    pub fn stop(&self) {
        let _ = self
            .script("k8s-stop.sh", false)
            .stdout(Stdio::null())
            .status();
    }

    /// True when the API server answers `/readyz` with `ok`.
    pub fn ready(&self) -> bool {
        let out = Command::new("curl")
            .args(["-sS", "-m", "1", "--cacert"])
            .arg(self.dir.join("pki/ca.crt"))
            .arg(format!("https://127.0.0.1:{}/readyz", self.port))
            .output();
        out.is_ok_and(|o| o.stdout == b"ok")
    }

    /// `kubectl ARGS` as the admin; (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        self.kubectl_with(&self.kubeconfig, args, None)
    }

    pub fn kubectl_with(
        &self,
        kubeconfig: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", kubeconfig).args(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("run kubectl");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        let out = child.wait_with_output().expect("kubectl output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `kubectl ARGS` that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    /// Server-side apply of YAML or JSON as the admin.
    pub fn apply(&self, doc: &str) -> (bool, String) {
        let (ok, _, err) = self.kubectl_with(
            &self.kubeconfig,
            &[
                "apply",
                "--server-side",
                "--field-manager=test",
                "--force-conflicts",
                "--validate=strict",
                "-f",
                "-",
            ],
            Some(doc),
        );
        (ok, err)
    }

    pub fn get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl get -o json")
    }

    /// A kubeconfig that authenticates as ServiceAccount `ns/sa` with a
    /// fresh token; its context's namespace is `context_ns` (none when
    /// `None`, so the client's namespace is `default`).
    pub fn service_account_kubeconfig(
        &self,
        ns: &str,
        sa: &str,
        context_ns: Option<&str>,
        out: &Path,
    ) {
        let token = self.ok(&["create", "token", sa, "-n", ns, "--duration=2h"]);
        let server = self.ok(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ]);
        let ca = self.ok(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let ns_line = context_ns.map_or(String::new(), |n| format!("    namespace: {n}\n"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: {server}\n    \
             certificate-authority-data: {ca}\nusers:\n- name: sa\n  user:\n    token: {}\n\
             contexts:\n- name: sa\n  context:\n    cluster: real\n    user: sa\n{ns_line}\
             current-context: sa\n",
            token.trim()
        );
        std::fs::write(out, text).expect("write kubeconfig");
    }
}

/// Network namespace `sgtest` joined to the host by a veth pair:
/// 198.51.100.1 on the host, backends on .10 and .11 inside.
pub struct Netns {
    backends: Vec<Child>,
}

pub const NETNS: &str = "sgtest";
pub const BACKENDS: [(&str, &str); 2] = [("198.51.100.10", "blue"), ("198.51.100.11", "green")];
pub const BACKEND_PORT: u16 = 8080;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(ip(args), "ip {args:?} failed");
}

const BACKEND_PY: &str = r#"
import sys, http.server
name = sys.argv[3].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

impl Netns {
    /// Creates the namespace, the veth pair and the backends, and checks
    /// that 198.51.100.0/24 is routed through the veth.
    pub fn up(scratch: &Path) -> Netns {
        // Leftovers of an interrupted run.
        ip(&["netns", "del", NETNS]);
        ip(&["link", "del", "sg-h"]);
        must(&["netns", "add", NETNS]);
        must(&[
            "link", "add", "sg-h", "type", "veth", "peer", "name", "sg-n",
        ]);
        must(&["link", "set", "sg-n", "netns", NETNS]);
        must(&["addr", "add", "198.51.100.1/24", "dev", "sg-h"]);
        must(&["link", "set", "sg-h", "up"]);
        for (addr, _) in BACKENDS {
            must(&[
                "netns",
                "exec",
                NETNS,
                "ip",
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "sg-n",
            ]);
        }
        must(&["netns", "exec", NETNS, "ip", "link", "set", "sg-n", "up"]);
        must(&["netns", "exec", NETNS, "ip", "link", "set", "lo", "up"]);
        for (addr, _) in BACKENDS {
            let out = Command::new("ip")
                .args(["route", "get", addr])
                .output()
                .expect("ip route get");
            let route = String::from_utf8_lossy(&out.stdout);
            assert!(
                route.contains("dev sg-h"),
                "{addr} is not routed through the veth: {route}"
            );
        }
        let script = scratch.join("backend.py");
        std::fs::write(&script, BACKEND_PY).expect("write backend.py");
        let backends = BACKENDS
            .iter()
            .map(|(addr, name)| {
                Command::new("ip")
                    .args(["netns", "exec", NETNS, "python3"])
                    .arg(&script)
                    .args([*addr, BACKEND_PORT.to_string().as_str(), *name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start a backend")
            })
            .collect();
        let n = Netns { backends };
        for (addr, name) in BACKENDS {
            let target: SocketAddr = format!("{addr}:{BACKEND_PORT}").parse().expect("addr");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some((200, body)) = http_get(target, "backend", "/") {
                    assert_eq!(body, name);
                    break;
                }
                assert!(Instant::now() < deadline, "backend {name} never answered");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        n
    }

    /// Stops the backends and removes the namespace. Call only after every
    /// controller has stopped.
    pub fn down(mut self) {
        for b in &mut self.backends {
            let _ = b.kill();
            let _ = b.wait();
        }
        self.backends.clear();
        ip(&["netns", "del", NETNS]);
        ip(&["link", "del", "sg-h"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for b in &mut self.backends {
            let _ = b.kill();
            let _ = b.wait();
        }
        if !self.backends.is_empty() {
            ip(&["netns", "del", NETNS]);
            ip(&["link", "del", "sg-h"]);
        }
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One GET on a fresh connection; (status, body) or `None` when the
/// connection fails.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// A controller process, killed when dropped.
pub struct Ctl {
    pub name: String,
    child: Option<Child>,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Ctl {
    /// Runs `sluicegate controller` with the Deployment's arguments and
    /// plain environment from `manifests/install.yaml` (as applied), on
    /// loopback ports, with `kubeconfig` and `extra` arguments.
    pub fn start(
        name: &str,
        deployment: &Value,
        kubeconfig: &Path,
        scratch: &Path,
        extra: &[&str],
    ) -> Ctl {
        let c = &deployment["spec"]["template"]["spec"]["containers"][0];
        let bin = std::env::var_os("SLUICEGATE_BIN").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_sluicegate")),
            PathBuf::from,
        );
        let (http, admin) = (free_port(), free_port());
        let log = scratch.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for e in c["env"].as_array().into_iter().flatten() {
            if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                cmd.env(k, v);
            }
        }
        cmd.args(
            c["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str()),
        )
        .env("SLUICEGATE_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("SLUICEGATE_HTTPS_ADDR", "off")
        .env("SLUICEGATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .env("SLUICEGATE_WORKERS", "1")
        .env("POD_NAME", name)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
        let child = cmd.spawn().expect("start the controller");
        Ctl {
            name: name.to_owned(),
            child: Some(child),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that contain `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.admin, "admin", "/readyz")
    }

    pub fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, text) = http_get(self.admin, "admin", "/metrics")?;
        text.lines()
            .find(|l| l.starts_with(line_prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `/readyz` is 200.
    pub fn wait_ready(&self, timeout: Duration) -> Duration {
        let t0 = Instant::now();
        while self.readyz().is_none_or(|(s, _)| s != 200) {
            assert!(
                t0.elapsed() < timeout,
                "{} not ready within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t0.elapsed()
    }

    /// SIGTERM (hand back the Lease, drain) and wait.
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(40);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every `every` until it returns `Some`, or panics after
/// `timeout` with `what`.
pub fn until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(every);
    }
}

/// The value at quantile `q` of sorted `v`.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}
