//! Tandem's reverse proxy: splits requests between stable and canary upstreams by weight
//! (optionally sticky by a header), and records each request's outcome per version.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollout::analysis::Arm;
use tokio::sync::mpsc;

/// Where traffic goes now.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub stable: Vec<SocketAddr>,
    pub canary: Vec<SocketAddr>,
    /// The canary's share of requests, 0..=1.
    pub canary_weight: f64,
    /// Requests carrying this header go to the same version every time (hash of its value).
    pub sticky_header: Option<String>,
    /// Requests carrying this cookie go to the same version every time (hash of its value).
    pub sticky_cookie: Option<String>,
}

/// One proxied request's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub arm: Arm,
    /// The upstream's status code; 0 when it did not answer.
    pub status: u16,
    /// A 5xx answer or no answer at all.
    pub error: bool,
    pub latency_ms: f64,
}

/// The proxy's shared state: routing (changed live by the controller) and outcome reporting.
#[derive(Debug)]
pub struct Proxy {
    routing: RwLock<Routing>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    counter: AtomicU64,
    client: Client<HttpConnector, Incoming>,
}

impl Proxy {
    pub fn new(routing: Routing) -> (Arc<Proxy>, mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        (Arc::new(Proxy { routing: RwLock::new(routing), outcomes: tx, counter: AtomicU64::new(0), client }), rx)
    }

    pub fn routing(&self) -> Routing {
        self.routing.read().map(|r| r.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Changes where traffic goes; the next request already follows it.
    pub fn set_routing(&self, routing: Routing) {
        if let Ok(mut current) = self.routing.write() {
            *current = routing;
        }
    }

    pub fn set_canary_weight(&self, weight: f64) {
        if let Ok(mut current) = self.routing.write() {
            current.canary_weight = weight.clamp(0.0, 1.0);
        }
    }

    /// Picks the version and upstream for a request, under one read of the routing. Weights never
    /// send traffic to an empty set.
    fn choose(&self, headers: &HeaderMap) -> Option<(Arm, SocketAddr)> {
        let routing = self.routing.read().ok()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let by_header = routing.sticky_header.as_deref().and_then(|h| headers.get(h)).and_then(|v| v.to_str().ok());
        let sticky = by_header.map(fnv).or_else(|| {
            let name = routing.sticky_cookie.as_deref()?;
            cookie_value(headers, name).map(|value| fnv(&value))
        });
        // A low-discrepancy sequence spreads the canary's share evenly over requests.
        let position = match sticky {
            Some(hash) => (hash % 10_000) as f64 / 10_000.0,
            None => ((n as f64) * 0.618_033_988_749_895).fract(),
        };
        let wanted = if position < routing.canary_weight { Arm::Canary } else { Arm::Stable };
        // An empty set never receives traffic: the other version serves instead.
        let arm = match (wanted, routing.stable.is_empty(), routing.canary.is_empty()) {
            (Arm::Canary, _, true) | (Arm::Stable, false, _) => Arm::Stable,
            _ => Arm::Canary,
        };
        let pool = if arm == Arm::Canary { &routing.canary } else { &routing.stable };
        pool.get((n as usize) % pool.len().max(1)).map(|addr| (arm, *addr))
    }
}

/// Requests with this header go to the new version (canary set) whatever the weights.
pub const PREVIEW_HEADER: &str = "x-tandem-preview";

impl Proxy {
    fn preview(&self) -> Option<(Arm, SocketAddr)> {
        let routing = self.routing.read().ok()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as usize;
        let pool = if routing.canary.is_empty() { &routing.stable } else { &routing.canary };
        let arm = if routing.canary.is_empty() { Arm::Stable } else { Arm::Canary };
        pool.get(n % pool.len().max(1)).map(|addr| (arm, *addr))
    }
}

/// The value of cookie `name` in the request's `cookie` headers.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What the proxy answers: the upstream's body as it streams, or a short message of its own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Serves the proxy on `listener` until the returned future is dropped: HTTP/1.1 with keep-alive
/// on plain hyper (no router in the way), `TCP_NODELAY` on both sides.
pub async fn serve(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors or a connection reset before it was accepted: try again.
                tracing::warn!("the proxy cannot accept a connection: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(forward(&proxy, request).await) }
            });
            // A client that goes away mid-request is not the proxy's problem.
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn message(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response
}

async fn forward(proxy: &Proxy, mut request: Request<Incoming>) -> Response<ProxyBody> {
    // Blue-green previews: `x-tandem-preview` reaches the new version before the switch.
    let chosen =
        if request.headers().contains_key(PREVIEW_HEADER) { proxy.preview() } else { proxy.choose(request.headers()) };
    let Some((arm, addr)) = chosen else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "no upstream is serving this environment\n");
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(axum::http::uri::Scheme::HTTP);
    parts.authority = addr.to_string().parse().ok();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(axum::http::uri::PathAndQuery::from_static("/"));
    }
    let Ok(uri) = Uri::from_parts(parts) else {
        return message(StatusCode::BAD_REQUEST, "bad request path\n");
    };
    *request.uri_mut() = uri;
    let version = if arm == Arm::Canary { "canary" } else { "stable" };
    request.headers_mut().insert("x-tandem-version", HeaderValue::from_static(version));
    let started = Instant::now();
    let result = proxy.client.request(request).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(response) => {
            let error = response.status().is_server_error();
            let status = response.status().as_u16();
            let _ = proxy.outcomes.send(Outcome { arm, status, error, latency_ms });
            response.map(Either::Left)
        }
        Err(_) => {
            let _ = proxy.outcomes.send(Outcome { arm, status: 0, error: true, latency_ms });
            message(StatusCode::BAD_GATEWAY, "the upstream did not answer\n")
        }
    }
}
