//! Tandem's reverse proxy: splits requests between stable and canary upstreams by weight
//! (optionally sticky by a header), and records each request's outcome per version.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    pub fn new(routing: Routing) -> (Arc<Proxy>, mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Client::builder(TokioExecutor::new()).build_http();
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

    /// Picks the version and upstream for a request. Weights never send traffic to an empty set.
    fn choose(&self, sticky: Option<&str>) -> Option<(Arm, SocketAddr)> {
        let routing = self.routing.read().ok()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // A low-discrepancy sequence spreads the canary's share evenly over requests.
        let position = match sticky {
            Some(value) => (fnv(value) % 10_000) as f64 / 10_000.0,
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
fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The axum router serving every path through the proxy.
pub fn router(proxy: Arc<Proxy>) -> axum::Router {
    axum::Router::new().fallback(forward).with_state(proxy)
}

async fn forward(State(proxy): State<Arc<Proxy>>, mut request: Request) -> Response {
    let sticky = {
        let (header, cookie) =
            proxy.routing.read().ok().map(|r| (r.sticky_header.clone(), r.sticky_cookie.clone())).unwrap_or_default();
        let by_header =
            header.and_then(|h| request.headers().get(h.as_str()).and_then(|v| v.to_str().ok()).map(str::to_string));
        by_header.or_else(|| cookie.and_then(|name| cookie_value(request.headers(), &name)))
    };
    // Blue-green previews: `x-tandem-preview` reaches the new version before the switch.
    let preview = request.headers().contains_key(PREVIEW_HEADER);
    let chosen = if preview { proxy.preview() } else { proxy.choose(sticky.as_deref()) };
    let Some((arm, addr)) = chosen else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no upstream is serving this environment\n").into_response();
    };
    let path = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let Ok(uri) = format!("http://{addr}{path}").parse::<Uri>() else {
        return (StatusCode::BAD_REQUEST, "bad request path\n").into_response();
    };
    *request.uri_mut() = uri;
    let version = if arm == Arm::Canary { "canary" } else { "stable" };
    request.headers_mut().insert("x-tandem-version", axum::http::HeaderValue::from_static(version));
    let started = Instant::now();
    let result = proxy.client.request(request).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;

    match result {
        Ok(response) => {
            let error = response.status().is_server_error();
            let status = response.status().as_u16();
            let _ = proxy.outcomes.send(Outcome { arm, status, error, latency_ms });
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(_) => {
            let _ = proxy.outcomes.send(Outcome { arm, status: 0, error: true, latency_ms });
            (StatusCode::BAD_GATEWAY, "the upstream did not answer\n").into_response()
        }
    }
}
