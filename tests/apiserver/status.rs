//! `metav1.Status` errors, worded like the real API server's so that code
//! which matches on `reason`/`code` (kube's `Status::is_not_found`, the
//! watcher's 410 handling, lease conflict retries) behaves the same here.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// A failed request: becomes a `Status` body with the same HTTP code.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_object(mut self, res: &ResourceType, name: &str) -> ApiError {
        self.details = Some(json!({
            "name": name,
            "group": res.group,
            "kind": res.plural,
        }));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// An unknown URL (no such group, version, resource or subresource).
    pub fn unknown_path() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn not_found(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.group_resource()),
        )
        .with_object(res, name)
    }

    pub fn already_exists(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.group_resource()),
        )
        .with_object(res, name)
    }

    /// Optimistic-concurrency failure (stale `metadata.resourceVersion`).
    pub fn conflict(res: &ResourceType, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.group_resource()
            ),
        )
        .with_object(res, name)
    }

    /// A 409 Conflict with its own message (apply conflicts, failed
    /// delete preconditions).
    pub fn conflict_message(res: &ResourceType, name: &str, message: String) -> ApiError {
        ApiError::new(409, "Conflict", message).with_object(res, name)
    }

    pub fn invalid(res: &ResourceType, name: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            format!(
                "{} \"{name}\" is invalid: {}",
                res.group_kind(),
                message.into()
            ),
        )
        .with_object(res, name)
    }

    /// History before the compaction point is gone (watch, list or continue).
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn method_not_allowed(method: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// A resourceVersion newer than anything the server has seen.
    pub fn too_large_resource_version(requested: u64, current: u64) -> ApiError {
        ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
    }

    pub fn unavailable() -> ApiError {
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the test API server is down (ApiServer::set_down)",
        )
    }

    /// The `Status` object the real server sends for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}
