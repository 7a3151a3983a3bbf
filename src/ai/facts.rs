//! What the AI gateway did for one request, for its access log line and
//! its spans: each provider call (instance, provider, model, times,
//! status) and, once the answer ends, the tokens it used. Filled in as
//! the request goes, read when the request's record is written; kept
//! only while the gateway logs or traces.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::plugins::TokenUsage;

/// One call to a provider instance.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub instance: Arc<str>,
    /// OpenTelemetry's `gen_ai.provider.name`.
    pub provider: &'static str,
    /// The host called.
    pub server: Arc<str>,
    pub model: Arc<str>,
    pub start: Instant,
    /// When the call ended: its failure, its whole answer, or the end of
    /// its stream.
    pub end: Instant,
    /// The provider's status, when it answered.
    pub status: Option<u16>,
    /// The answer's usage (the call that answered).
    pub usage: Option<TokenUsage>,
}

/// The record of one request.
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub calls: Vec<CallRecord>,
    /// The instance that answered.
    pub instance: Option<Arc<str>>,
    pub usage: Option<TokenUsage>,
    /// Time from the request to the first token of a stream.
    pub ttft: Option<Duration>,
}

/// Shared between the request's pipeline and its answer's body.
#[derive(Debug, Default)]
pub struct Facts(Mutex<Record>);

impl Facts {
    pub fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn snapshot(&self) -> Record {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
