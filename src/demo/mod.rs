//! `sluicegate demo`: the real gateway in standalone mode on the shipped
//! manifests, with two echo backends, so that host and path routing,
//! weighted balancing and live edits can be tried without a cluster.

pub mod echo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::gateway::{GatewayConfig, Standalone, StartError};

/// The manifests under `examples/demo/`, built in so that the demo also
/// works from an installed binary.
pub const MANIFESTS: &[(&str, &str)] = &[
    (
        "00-backends.yaml",
        include_str!("../../examples/demo/00-backends.yaml"),
    ),
    (
        "10-ingress.yaml",
        include_str!("../../examples/demo/10-ingress.yaml"),
    ),
    (
        "20-apiroute.yaml",
        include_str!("../../examples/demo/20-apiroute.yaml"),
    ),
];

/// The echo backends' addresses, as the demo manifests' EndpointSlices name them.
pub const BLUE: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9001);
pub const GREEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9002);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start echo backend {name} on {addr}: {source} (is another demo running?)")]
    Backend {
        name: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the demo manifests to {dir}: {source}")]
    Manifests {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A running demo.
pub struct Demo {
    pub standalone: Standalone,
    pub dir: PathBuf,
    _backends: [echo::EchoServer; 2],
}

/// Uses `dir` when it holds manifests; otherwise writes the built-in ones
/// to a temporary directory and uses that.
fn manifest_dir(dir: &Path) -> Result<PathBuf, DemoError> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let tmp = std::env::temp_dir().join("sluicegate-demo");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&tmp)?;
        for (name, text) in MANIFESTS {
            std::fs::write(tmp.join(name), text)?;
        }
        Ok(())
    };
    write().map_err(|source| DemoError::Manifests {
        dir: tmp.clone(),
        source,
    })?;
    Ok(tmp)
}

impl Demo {
    pub async fn start(config: GatewayConfig, dir: &Path) -> Result<Demo, DemoError> {
        let blue = echo::EchoServer::start(BLUE, "blue")
            .await
            .map_err(|source| DemoError::Backend {
                name: "blue",
                addr: BLUE,
                source,
            })?;
        let green = echo::EchoServer::start(GREEN, "green")
            .await
            .map_err(|source| DemoError::Backend {
                name: "green",
                addr: GREEN,
                source,
            })?;
        let dir = manifest_dir(dir)?;
        let standalone = Standalone::start(config, dir.clone()).await?;
        Ok(Demo {
            standalone,
            dir,
            _backends: [blue, green],
        })
    }

    /// What to print for a newcomer.
    pub fn instructions(&self) -> String {
        let gw = self.standalone.gateway();
        let http = gw.http_addr();
        let port = http.port();
        let admin = gw.admin_addr();
        let dir = self.dir.display();
        format!(
            r#"
Sluicegate demo is running.

  proxy:     http://127.0.0.1:{port}
  admin:     http://{admin}/routes   (the compiled table, with diagnostics)
  backends:  blue on {BLUE}, green on {GREEN} (echo servers)
  manifests: {dir}

Try:
  # host routing: an Ingress sends demo.localhost to blue
  curl -s -H 'Host: demo.localhost' http://127.0.0.1:{port}/

  # weighted split 80/20 between blue and green on shop.localhost/api
  for i in $(seq 10); do curl -s -H 'Host: shop.localhost' http://127.0.0.1:{port}/api/items | head -1; done

  # header match: x-canary: 1 always goes to green
  curl -s -H 'Host: shop.localhost' -H 'x-canary: 1' http://127.0.0.1:{port}/api/items

  # no route: 404; a Service without endpoints: 503
  curl -si -H 'Host: nowhere.localhost' http://127.0.0.1:{port}/ | head -1
  curl -si -H 'Host: shop.localhost' http://127.0.0.1:{port}/maintenance | head -1

  # live edit: change a weight in {dir}/20-apiroute.yaml and save;
  # the next requests follow it within a second.

Press Ctrl-C to stop.
"#
        )
    }
}
