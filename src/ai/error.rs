//! Why an AI request was not answered by a provider, and the one mapping
//! of each reason to what the client gets: a status and OpenAI's error
//! body (`{"error": {"message", "type", "param", "code"}}`), which every
//! OpenAI SDK turns into its own exception type.
//!
//! Messages name what the client can act on; they never carry a
//! provider key, an address, or a provider's own complaint about the
//! gateway's credentials.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};

/// Why a provider call failed, as `fallbackOn` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    RateLimited,
    ServerError,
    Timeout,
    ConnectFailure,
}

impl Failure {
    /// The label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::RateLimited => "rate_limited",
            Failure::ServerError => "server_error",
            Failure::Timeout => "timeout",
            Failure::ConnectFailure => "connect_failure",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            Failure::RateLimited => 1,
            Failure::ServerError => 2,
            Failure::Timeout => 4,
            Failure::ConnectFailure => 8,
        }
    }
}

/// Why a request got no answer from a provider.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// The client's request cannot be served as it is.
    #[error("{0}")]
    BadRequest(String),
    /// No AI endpoint at this path.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method not allowed; use {0}")]
    Method(&'static str),
    /// A prompt plugin refused the request.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// The last instance tried failed in a way that ended the request.
    #[error("{message}")]
    Provider {
        failure: Option<Failure>,
        status: StatusCode,
        message: String,
        retry_after: Option<HeaderValue>,
    },
    /// A provider refused the gateway's own key (401, 403): the operator's
    /// problem, not the client's.
    #[error("the provider refused the gateway's credentials")]
    Credentials,
    /// No instance could be tried (every one is set aside and the
    /// request's time ran out, or none is configured usable).
    #[error("no provider instance is available")]
    Unavailable,
}

impl AiError {
    /// A provider's failure before anything reached the client.
    pub fn failed(failure: Failure, message: impl Into<String>) -> AiError {
        let status = match failure {
            Failure::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::ServerError | Failure::ConnectFailure => StatusCode::BAD_GATEWAY,
        };
        AiError::Provider {
            failure: Some(failure),
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The fallback condition this error is, if any.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            AiError::Provider { failure, .. } => *failure,
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AiError::NotFound(_) => StatusCode::NOT_FOUND,
            AiError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            AiError::Refused { status, .. } | AiError::Provider { status, .. } => *status,
            AiError::Credentials => StatusCode::BAD_GATEWAY,
            AiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OpenAI's `type` and `code` for this error.
    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            AiError::BadRequest(_) | AiError::Method(_) => ("invalid_request_error", None),
            AiError::NotFound(_) => ("invalid_request_error", Some("unknown_url")),
            AiError::Refused { .. } => ("invalid_request_error", Some("prompt_refused")),
            AiError::Provider { status, .. } if status.as_u16() == 429 => {
                ("rate_limit_exceeded", Some("rate_limit_exceeded"))
            }
            AiError::Provider { status, .. } if status.is_client_error() => {
                ("invalid_request_error", None)
            }
            AiError::Provider { failure, .. } => (
                "server_error",
                Some(failure.map_or("provider_error", Failure::as_str)),
            ),
            AiError::Credentials => ("server_error", Some("provider_credentials")),
            AiError::Unavailable => ("server_error", Some("no_provider")),
        }
    }

    /// The client's answer body: OpenAI's error object.
    pub fn body(&self) -> Bytes {
        let (kind, code) = self.kind();
        let body = serde_json::json!({"error": {
            "message": self.to_string(),
            "type": kind,
            "param": null,
            "code": code,
        }});
        Bytes::from(body.to_string())
    }

    /// The headers the client's answer carries besides its type.
    pub fn headers(&self) -> Option<(HeaderName, HeaderValue)> {
        match self {
            AiError::Provider {
                retry_after: Some(v),
                ..
            } => Some((header::RETRY_AFTER, v.clone())),
            AiError::Method(allow) => Some((header::ALLOW, HeaderValue::from_static(allow))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_take_openai_shape() {
        let e = AiError::Provider {
            failure: Some(Failure::RateLimited),
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "slow down".into(),
            retry_after: Some(HeaderValue::from_static("7")),
        };
        assert_eq!(e.status(), 429);
        assert_eq!(
            e.headers(),
            Some((header::RETRY_AFTER, HeaderValue::from_static("7")))
        );
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "slow down");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(
            AiError::failed(Failure::Timeout, "late").status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(AiError::Credentials.status(), StatusCode::BAD_GATEWAY);
    }
}
