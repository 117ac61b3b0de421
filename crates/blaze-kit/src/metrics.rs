//! Prometheus metrics of the process: RED metrics per RPC and HTTP route plus
//! the product timings (time to first token, first SSE event, preview ready).
//! Rendered in the text format at `/metrics` of every role.

use std::sync::OnceLock;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub role: String,
    pub rpc: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
    pub outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    pub rpc_requests: Family<RpcLabels, Counter>,
    pub rpc_seconds: HistogramFamily<RpcLabels>,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_seconds: HistogramFamily<RouteLabels>,
    pub sse_streams_open: Gauge,
    pub time_to_first_token_seconds: Histogram,
    pub first_event_seconds: Histogram,
    pub preview_ready_seconds: Histogram,
    pub background_runs: Family<TaskLabels, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("blaze");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_seconds: HistogramFamily<RpcLabels> = Family::new_with_constructor(latency);
        let http_requests = Family::<RouteLabels, Counter>::default();
        let http_seconds: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency);
        let sse_streams_open = Gauge::default();
        let time_to_first_token_seconds = latency();
        let first_event_seconds = latency();
        let preview_ready_seconds = latency();
        let background_runs = Family::<TaskLabels, Counter>::default();
        registry.register("rpc_requests", "gRPC requests served", rpc_requests.clone());
        registry.register("rpc_seconds", "gRPC latency to response headers", rpc_seconds.clone());
        registry.register("http_requests", "HTTP requests at the edge", http_requests.clone());
        registry.register("http_seconds", "HTTP latency at the edge", http_seconds.clone());
        registry.register("sse_streams_open", "SSE streams held by the edge", sse_streams_open.clone());
        registry.register("time_to_first_token_seconds", "model call start to first token", time_to_first_token_seconds.clone());
        registry.register("first_event_seconds", "edge: request to first SSE event", first_event_seconds.clone());
        registry.register("preview_ready_seconds", "preview run to ready", preview_ready_seconds.clone());
        registry.register("background_task_runs", "runs of named background tasks", background_runs.clone());
        Metrics {
            registry,
            rpc_requests,
            rpc_seconds,
            http_requests,
            http_seconds,
            sse_streams_open,
            time_to_first_token_seconds,
            first_event_seconds,
            preview_ready_seconds,
            background_runs,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String cannot fail");
        out
    }

    pub fn task_run(&self, task: &str, ok: bool) {
        self.background_runs.get_or_create(&TaskLabels { task: task.into(), outcome: if ok { "ok".into() } else { "error".into() } }).inc();
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
