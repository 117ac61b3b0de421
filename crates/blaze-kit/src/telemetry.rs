//! Logs and traces: `tracing` everywhere, JSON (or text) logs, OTLP export
//! when an endpoint is configured, and W3C trace-context propagation helpers
//! for gRPC metadata and HTTP headers.

use std::sync::OnceLock;

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::TelemetryConfig;

static PROVIDER: OnceLock<Option<SdkTracerProvider>> = OnceLock::new();

/// Install the global subscriber (once per process; later calls are no-ops,
/// which lets tests boot many meshes in one process).
pub fn init(cfg: &TelemetryConfig) {
    PROVIDER.get_or_init(|| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log_filter));
        let endpoint = if cfg.otlp_endpoint.is_empty() {
            std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default()
        } else {
            cfg.otlp_endpoint.clone()
        };
        let provider = if endpoint.is_empty() {
            None
        } else {
            use opentelemetry_otlp::WithExportConfig;
            match opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build() {
                Ok(exporter) => {
                    let provider = SdkTracerProvider::builder()
                        .with_batch_exporter(exporter)
                        .with_resource(Resource::builder().with_service_name(cfg.service_name.clone()).build())
                        .build();
                    global::set_tracer_provider(provider.clone());
                    Some(provider)
                }
                Err(e) => {
                    eprintln!("OTLP exporter disabled: {e}");
                    None
                }
            }
        };
        let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(cfg.service_name.clone())));
        let registry = tracing_subscriber::registry().with(filter).with(otel);
        let result = if cfg.log_format == "text" {
            registry.with(tracing_subscriber::fmt::layer().with_target(false)).try_init()
        } else {
            registry
                .with(tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
                .try_init()
        };
        if let Err(e) = result {
            eprintln!("tracing already initialised: {e}");
        }
        provider
    });
}

/// Flush spans on shutdown.
pub fn shutdown() {
    if let Some(Some(p)) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

pub struct MetadataInjector<'a>(pub &'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value.as_str()))
        {
            self.0.insert(k, v);
        }
    }
}

pub struct HeaderInjector<'a>(pub &'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Inject the current span's context into outgoing gRPC metadata.
pub fn inject_metadata(md: &mut tonic::metadata::MetadataMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MetadataInjector(md)));
}

/// Inject the current span's context into outgoing HTTP headers.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

/// Make `span` a child of the trace context carried by `headers`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(cx);
}
