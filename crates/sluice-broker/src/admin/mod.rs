//! The admin HTTP listener: `/metrics`, the JSON admin API under `/api/v1`, health checks,
//! the OpenAPI description and the web console.
//!
//! It binds before the logs are recovered, so `/health/ready` can say "not yet"; until the
//! broker state exists every API route answers 503 `not_ready`. Errors are JSON
//! `{"code", "message"}`: bad input gets a 4xx, whatever the input — rejections of axum's own
//! extractors are turned into the same shape. Writes (create and delete topics, alter configs)
//! go through the same functions as the Kafka requests, so both paths validate alike.

mod api;
mod messages;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::metrics::Metrics;
use crate::BrokerState;

/// The largest request body the admin API reads.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// Live-stats streams (SSE) open at once; more get 429.
pub(crate) const MAX_STREAMS: usize = 32;
/// Message-browser requests decoding at once; more wait their turn.
pub(crate) const MAX_CONCURRENT_BROWSES: usize = 4;

const CONSOLE_HTML: &str = include_str!("console.html");
const OPENAPI_JSON: &str = include_str!("openapi.json");

/// What the admin handlers share. The broker state appears once the logs are recovered.
#[derive(Debug)]
pub(crate) struct Admin {
    pub metrics: Arc<Metrics>,
    pub address: SocketAddr,
    pub started_at_ms: i64,
    state: OnceLock<Arc<BrokerState>>,
    shutdown: watch::Receiver<bool>,
    streams: Arc<Semaphore>,
    browses: Arc<Semaphore>,
}

impl Admin {
    pub fn new(
        metrics: Arc<Metrics>,
        address: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            metrics,
            address,
            started_at_ms: crate::now_ms(),
            state: OnceLock::new(),
            shutdown,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            browses: Arc::new(Semaphore::new(MAX_CONCURRENT_BROWSES)),
        }
    }

    /// Called once, when the logs are open and the broker accepts connections.
    pub fn set_state(&self, state: Arc<BrokerState>) {
        let _ = self.state.set(state);
    }

    fn state(&self) -> Result<&Arc<BrokerState>, ApiError> {
        self.state.get().ok_or_else(|| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: "the broker is recovering its logs".into(),
        })
    }
}

/// A JSON error: `{"code": "...", "message": "..."}` with an HTTP status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// The broker cannot answer because of its own state (an offline data directory, a failed
    /// worker): a 503, never a 4xx that would blame the request.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            message: message.into(),
        }
    }

    /// The partition asked for lives on other brokers of the cluster (421 Misdirected
    /// Request: the same request to one of them is answered).
    pub fn not_hosted(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "not_hosted",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(format!("bad path: {}", e.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message: format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            }
        } else {
            ApiError::bad_request(format!("cannot read the request body: {}", e.body_text()))
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

// What the route modules (`api`, `messages`) share lives here, so that neither imports the
// other.

/// Query parameters as (name, value) pairs; a malformed query string is a 400.
fn query_pairs(raw: Option<String>) -> ApiResult<Vec<(String, String)>> {
    let raw = raw.unwrap_or_default();
    serde_urlencoded::from_str(&raw)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))
}

/// The integer query parameter `name`, if present; not an integer is a 400.
fn int_param(pairs: &[(String, String)], name: &str) -> ApiResult<Option<i64>> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("{name}={v}: expected an integer")))
        })
        .transpose()
}

/// Runs state reads that take log and coordinator locks on a blocking thread, so a slow
/// scrape or a large cluster never stalls the runtime's workers.
async fn off_the_runtime<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> ApiResult<R> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::unavailable("internal", format!("the operation failed: {e}")))
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(api::routes())
        .merge(messages::routes())
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(admin.clone(), same_origin))
        .with_state(admin)
}

/// Refuses requests a web page could make on the operator's behalf. On a loopback listener
/// the `Host` must name a loopback host (a DNS-rebinding page names its own domain), and a
/// write carrying an `Origin` must come from the console's own origin. JSON bodies must also
/// say `application/json` (checked where bodies are read), which forces browsers into a
/// CORS preflight this server never grants.
async fn same_origin(admin: Shared, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"));
    if admin.address.ip().is_loopback() && host.is_some_and(|h| !is_loopback_host(h)) {
        return forbidden("the admin listener is on loopback: Host must name a loopback host");
    }
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if let Some(origin) = request.headers().get(header::ORIGIN).filter(|_| write) {
        let own = host.map(|h| format!("http://{h}"));
        if origin.to_str().ok() != own.as_deref() {
            return forbidden("cross-origin writes are refused");
        }
    }
    next.run(request).await
}

fn forbidden(message: &str) -> Response {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code: "forbidden",
        message: message.to_string(),
    }
    .into_response()
}

/// `localhost`, a loopback IP, or either with a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Serves the admin listener until shutdown.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let mut shutdown = admin.shutdown.clone();
    let app = router(admin);
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

type Shared = axum::extract::State<Arc<Admin>>;

async fn console() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        CONSOLE_HTML,
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

async fn metrics(admin: Shared) -> Response {
    if !admin.metrics.enabled() {
        return ApiError::not_found("metrics are disabled (metrics.enabled=false)").into_response();
    }
    let admin = admin.0.clone();
    let encoded = off_the_runtime(move || {
        crate::metrics::encode(&admin.metrics, admin.state.get().map(|s| s.as_ref()))
    })
    .await;
    match encoded {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "live": true }))
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    logs_recovered: bool,
    log_directory_online: bool,
    groups_loaded: bool,
    transactions_loaded: bool,
    reasons: Vec<&'static str>,
}

async fn ready(admin: Shared) -> Response {
    let state = admin.state.get();
    let stopping = *admin.shutdown.borrow();
    let logs_recovered = state.is_some();
    // Before recovery the directory's state is unknown; "not recovered" says enough.
    let log_directory_online = state.is_some_and(|s| !s.replicas.is_offline());
    let groups_loaded = state.is_some_and(|s| s.groups.is_loaded());
    let transactions_loaded = state.is_some_and(|s| s.txns.is_loaded());
    let mut reasons = Vec::new();
    if !logs_recovered {
        reasons.push("the partition logs are still being opened and recovered");
    } else if !log_directory_online {
        reasons.push(
            "the log directory is offline after a failed write or sync (a full or failing \
             disk); every produce fails until the broker is restarted",
        );
    }
    if logs_recovered && !groups_loaded {
        reasons.push("the group coordinator is loading __consumer_offsets");
    }
    if logs_recovered && !transactions_loaded {
        reasons.push("the transaction coordinator is loading __transaction_state");
    }
    // Not ready once shutdown has begun, so load balancers stop sending work.
    if stopping {
        reasons.push("the broker is shutting down");
    }
    let r = Readiness {
        ready: reasons.is_empty(),
        logs_recovered,
        log_directory_online,
        groups_loaded,
        transactions_loaded,
        reasons,
    };
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {}", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!("{method} is not allowed on {}", uri.path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;

    fn admin() -> Arc<Admin> {
        let (_tx, rx) = watch::channel(false);
        let address = "127.0.0.1:0".parse().expect("address");
        Arc::new(Admin::new(Arc::new(Metrics::new(true)), address, rx))
    }

    async fn json(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&body).expect("JSON body"))
    }

    /// Before the logs are recovered (no broker state yet), readiness is false with a 503,
    /// and the API answers `not_ready`, while metrics are already served.
    #[tokio::test]
    async fn not_ready_until_the_logs_are_recovered() {
        let admin = admin();
        let (status, body) = json(ready(State(admin.clone())).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["ready"], false);
        assert_eq!(body["logs_recovered"], false);
        let err = admin.state().expect_err("no state yet");
        let (status, body) = json(err.into_response()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["code"], "not_ready");
        let metrics = metrics(State(admin)).await;
        assert_eq!(metrics.status(), StatusCode::OK);
    }

    /// Every path and method the OpenAPI document describes reaches a handler (here, before
    /// the logs are recovered, mostly a 503 `not_ready`): none gets the 404 of an unknown
    /// route or the 405 of a method nothing serves, which a path that is not there does get.
    #[tokio::test]
    async fn every_documented_route_is_served() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = watch::channel(false);
        let admin = Arc::new(Admin::new(Arc::new(Metrics::new(true)), address, stopped));
        let server = tokio::spawn(serve(listener, admin));
        let status_of = |method: String, path: String| async move {
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            // The status line only: /api/v1/stream may go on answering.
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .await
                .expect("read");
            line.split(' ').nth(1).unwrap_or_default().to_string()
        };

        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json");
        let paths = doc["paths"].as_object().expect("paths");
        assert!(paths.len() > 10, "{paths:?}");
        for (template, item) in paths {
            let path = template
                .replace("{node_id}", "0")
                .replace("{name}", "t")
                .replace("{partition}", "0")
                .replace("{group_id}", "g");
            let item = item.as_object().expect("path item");
            for method in item.keys().filter(|k| *k != "parameters") {
                let method = method.to_uppercase();
                let status = status_of(method.clone(), path.clone()).await;
                assert!(
                    !status.is_empty() && status != "404" && status != "405",
                    "{method} {template}: {status}"
                );
            }
        }
        assert_eq!(
            status_of("GET".into(), "/api/v1/nowhere".into()).await,
            "404"
        );
        assert_eq!(
            status_of("PUT".into(), "/api/v1/topics".into()).await,
            "405"
        );
        stop.send(true).expect("the server is listening");
        server.await.expect("the server stops");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "LOCALHOST:9644",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:9644",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9644",
            "10.0.0.1",
            "[::2]",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    /// The served OpenAPI document is JSON and the console is HTML.
    #[test]
    fn embedded_assets_are_well_formed() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("openapi.json");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(CONSOLE_HTML.trim_start().starts_with("<!"));
    }
}
