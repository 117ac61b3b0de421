//! A read-only proxy of the package registry on a unix socket, the only
//! thing install sandboxes can reach: GET and HEAD are forwarded to the
//! configured registry; everything else is refused. Sandboxes keep no
//! network namespace access to this machine's services (Postgres, Redis…),
//! which sharing the host network would give them.

use std::path::{Path, PathBuf};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode},
    response::{IntoResponse, Response},
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
}

async fn forward(State(up): State<Upstream>, req: Request) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return (StatusCode::METHOD_NOT_ALLOWED, "the registry is read-only from sandboxes").into_response();
    }
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{}", up.base.trim_end_matches('/'), path);
    let mut out = up.http.request(req.method().clone(), &url);
    for name in ["accept", "npm-command", "pacote-req-type", "user-agent"] {
        if let Some(v) = req.headers().get(name) {
            out = out.header(name, v);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            let mut builder = Response::builder().status(status.as_u16());
            for name in ["content-type", "etag", "last-modified", "cache-control"] {
                if let Some(v) = resp.headers().get(name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
                    builder = builder.header(name, v);
                }
            }
            builder.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("registry unreachable: {e}")).into_response(),
    }
}

/// Serve the proxy at `socket` until `shutdown`.
pub async fn serve(socket: PathBuf, registry: String, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = tokio::net::UnixListener::bind(&socket)?;
    // Sandboxes run as an unprivileged user: let them connect.
    allow_everyone(&socket)?;
    let http = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10)).build()?;
    let app = Router::new().fallback(forward).with_state(Upstream { base: registry, http });
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(())
}

fn allow_everyone(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666))
}
