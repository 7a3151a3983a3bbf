//! What the gateway tells about the requests it serves, besides metrics:
//! the access log and distributed traces. Both are off the request path
//! (a writer thread, an export task) and bounded (full queues drop, and
//! count what they drop).

pub mod access_format;
pub mod access_log;
pub mod line_window;
pub mod trace;
pub mod wall;

/// The access log and the tracer of one gateway; each optional.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub access_log: Option<access_log::AccessLog>,
    pub tracer: Option<trace::Tracer>,
}

impl Telemetry {
    /// Whether requests need their facts collected at all.
    pub fn enabled(&self) -> bool {
        self.access_log.is_some() || self.tracer.is_some()
    }
}
