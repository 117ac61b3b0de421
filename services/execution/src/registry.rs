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

/// Serve the proxy at `socket` until `shutdown`. The registry URL passes
/// the egress policy (http(s) only, never link-local/metadata addresses).
pub async fn serve(socket: PathBuf, registry: String, shutdown: CancellationToken) -> anyhow::Result<()> {
    blaze_kit::egress::check_url(&registry, true).map_err(|e| anyhow::anyhow!("sandbox.npm_registry {registry:?}: {e}"))?;
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

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn ask(socket: &Path, request: &str) -> String {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn only_reads_reach_the_registry_and_only_the_registry() {
        // a stand-in registry that tells which path it was asked for
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", upstream.local_addr().unwrap());
        let app = Router::new().fallback(|req: Request| async move { format!("registry saw {}", req.uri().path()) });
        tokio::spawn(async move { axum::serve(upstream, app).await });
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("registry.sock");
        let stop = CancellationToken::new();
        tokio::spawn(serve(socket.clone(), base, stop.clone()));
        for _ in 0..50 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let got = ask(&socket, "GET /nanoid HTTP/1.0\r\nHost: x\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.0 200") && got.ends_with("registry saw /nanoid"), "{got}");
        let got = ask(&socket, "PUT /nanoid HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.0 405"), "{got}");
        // an absolute URI names another host: only its path is used, on the registry
        let got = ask(&socket, "GET http://169.254.169.254/latest/meta-data HTTP/1.0\r\nHost: 169.254.169.254\r\n\r\n").await;
        assert!(got.ends_with("registry saw /latest/meta-data"), "{got}");
        stop.cancel();
        assert!(serve(dir.path().join("x.sock"), "http://169.254.169.254/".into(), CancellationToken::new()).await.is_err());
    }
}
