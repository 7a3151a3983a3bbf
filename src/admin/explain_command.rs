//! `sluicegate explain`: the explanation of a request, either offline
//! from a directory of manifests (translated and compiled exactly as
//! standalone mode does) or from a running gateway's admin port.

use std::path::PathBuf;
use std::time::Duration;

use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;
use tokio::net::TcpStream;

use super::explain::{ExplainRequest, QueryError, explain};
use crate::routing::{EncodedSlashes, RouteTable, UpstreamRegistry};
use crate::source::standalone::DirSource;
use crate::translate::{TranslateOptions, translate};

/// Where the configuration to explain against comes from.
// Built once per command run: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Target {
    /// A directory of manifests, as `standalone --config` reads it.
    Config {
        dir: PathBuf,
        options: TranslateOptions,
        slashes: EncodedSlashes,
    },
    /// A running gateway's admin port, e.g. `http://127.0.0.1:9180`.
    Admin { url: String, token: Option<String> },
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot read config directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("admin URL {0:?}: expected http://HOST:PORT")]
    Url(String),
    #[error("cannot reach the admin port at {0}: {1}")]
    Connect(String, String),
    #[error("the admin port answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("the admin port's answer is not an explanation: {0}")]
    Answer(String),
}

/// Longest wait for the admin port.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read from the admin port.
const MAX_ANSWER: usize = 16 << 20;

/// The explanation of `req`, as JSON (see [`super::explain::render_text`]).
pub async fn run(target: &Target, req: &ExplainRequest) -> Result<Value, CommandError> {
    match target {
        Target::Config {
            dir,
            options,
            slashes,
        } => {
            let mut source = DirSource::new(dir.clone());
            source.settle().await.map_err(|source| CommandError::Dir {
                dir: dir.clone(),
                source,
            })?;
            let (state, issues) = source.state();
            let translation = translate(&state, options);
            let table = RouteTable::build(&translation.table, &UpstreamRegistry::new());
            let mut out = explain(&table, &translation.table, 0, req, *slashes)?;
            // Offline there is no live table: say what the answer rests on.
            out["generation"] = Value::Null;
            out["configProblems"] = (translation.diagnostics.len() + issues.len()).into();
            Ok(out)
        }
        Target::Admin { url, token } => {
            tokio::time::timeout(TIMEOUT, remote(url, token.as_deref(), req))
                .await
                .map_err(|_| {
                    CommandError::Connect(url.clone(), format!("no answer within {TIMEOUT:?}"))
                })?
        }
    }
}

async fn remote(
    url: &str,
    token: Option<&str>,
    req: &ExplainRequest,
) -> Result<Value, CommandError> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let uri: Uri = with_scheme
        .parse()
        .map_err(|_| CommandError::Url(url.to_owned()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => a.clone(),
        _ => return Err(CommandError::Url(url.to_owned())),
    };
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let connect_err =
        |e: &dyn std::fmt::Display| CommandError::Connect(url.to_owned(), e.to_string());
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| connect_err(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| connect_err(&e))?;
    tokio::spawn(conn);
    let base = uri.path().trim_end_matches('/');
    let mut request = Request::get(format!("{base}/explain?{}", req.to_query()))
        .header(header::HOST, authority.as_str());
    if let Some(t) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", t.trim()));
    }
    let request = request
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| CommandError::Url(e.to_string()))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| connect_err(&e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| connect_err(&*e))?
        .to_bytes();
    if status != StatusCode::OK {
        let text = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        return Err(CommandError::Status(status, text));
    }
    serde_json::from_slice(&body).map_err(|e| CommandError::Answer(e.to_string()))
}
