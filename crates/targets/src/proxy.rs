//! Tandem's reverse proxy: splits requests between stable and canary upstreams by weight
//! (optionally sticky by a header), and records each request's outcome per version.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::uri::Authority;
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

/// The routing with each upstream's URI authority made once, not per request.
#[derive(Debug)]
struct Table {
    routing: Routing,
    stable: Vec<Authority>,
    canary: Vec<Authority>,
}

impl Table {
    fn new(routing: Routing) -> Table {
        let authorities =
            |addrs: &[SocketAddr]| addrs.iter().filter_map(|a| Authority::try_from(a.to_string()).ok()).collect();
        Table { stable: authorities(&routing.stable), canary: authorities(&routing.canary), routing }
    }
}

/// The proxy's shared state: routing (changed live by the controller) and outcome reporting.
///
/// Outcomes go to an unbounded channel that its reader drains on a tick (`try_recv`), never
/// by awaiting each one: a sender then never has to wake a parked reader, which would cost a
/// cross-thread wake-up per request.
#[derive(Debug)]
pub struct Proxy {
    table: RwLock<Table>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    counter: AtomicU64,
}

impl Proxy {
    pub fn new(routing: Routing) -> (Arc<Proxy>, mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Arc::new(Proxy { table: RwLock::new(Table::new(routing)), outcomes: tx, counter: AtomicU64::new(0) }), rx)
    }

    pub fn routing(&self) -> Routing {
        self.table.read().map(|t| t.routing.clone()).unwrap_or_else(|e| e.into_inner().routing.clone())
    }

    /// Changes where traffic goes; the next request already follows it.
    pub fn set_routing(&self, routing: Routing) {
        if let Ok(mut current) = self.table.write() {
            *current = Table::new(routing);
        }
    }

    pub fn set_canary_weight(&self, weight: f64) {
        if let Ok(mut current) = self.table.write() {
            current.routing.canary_weight = weight.clamp(0.0, 1.0);
        }
    }

    /// Picks the version and upstream for a request, under one read of the routing. Weights never
    /// send traffic to an empty set.
    fn choose(&self, headers: &HeaderMap) -> Option<(Arm, Authority)> {
        let table = self.table.read().ok()?;
        let routing = &table.routing;
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
        let pool = if arm == Arm::Canary { &table.canary } else { &table.stable };
        pool.get((n as usize) % pool.len().max(1)).map(|authority| (arm, authority.clone()))
    }
}

/// Requests with this header go to the new version (canary set) whatever the weights.
pub const PREVIEW_HEADER: &str = "x-tandem-preview";

impl Proxy {
    fn preview(&self) -> Option<(Arm, Authority)> {
        let table = self.table.read().ok()?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed) as usize;
        let (arm, pool) =
            if table.canary.is_empty() { (Arm::Stable, &table.stable) } else { (Arm::Canary, &table.canary) };
        pool.get(n % pool.len().max(1)).map(|authority| (arm, authority.clone()))
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
/// on plain hyper (no router in the way), `TCP_NODELAY` on both sides, and a pool of upstream
/// connections of its own (so that each connection's work stays on the runtime that serves it).
pub async fn serve(listener: tokio::net::TcpListener, proxy: Arc<Proxy>) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
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
        let (proxy, client) = (proxy.clone(), client.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (proxy, client) = (proxy.clone(), client.clone());
                async move { Ok::<_, std::convert::Infallible>(forward(&proxy, &client, request).await) }
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

/// Serves the proxy on `threads` threads, each with a single-threaded runtime, its own listener
/// on `addr` (`SO_REUSEPORT`: the kernel spreads connections) and its own upstream pool — as
/// nginx runs one worker per core. Returns the address bound and what stops them.
pub fn serve_on_threads(addr: SocketAddr, proxy: Arc<Proxy>, threads: usize) -> std::io::Result<(SocketAddr, Threads)> {
    let bind = |addr: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseport(true)?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let std = listener.into_std()?;
        Ok(std)
    };
    // The first listener picks the port (when `addr` says 0); the others share it.
    let first = bind(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads.max(1) {
        listeners.push(bind(bound)?);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let (proxy, mut stopped) = (proxy.clone(), stopped.clone());
        let handle = std::thread::Builder::new().name(format!("proxy-{index}")).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!("the proxy's thread {index} cannot start its runtime: {error}");
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!("the proxy's thread {index} cannot listen: {error}");
                        return;
                    }
                };
                tokio::select! {
                    () = serve(listener, proxy) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            });
        })?;
        handles.push(handle);
    }
    Ok((bound, Threads { stop, handles }))
}

/// The threads of [`serve_on_threads`].
#[derive(Debug)]
pub struct Threads {
    stop: tokio::sync::watch::Sender<bool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    /// Stops serving (connections in flight end with their runtime) and waits for the threads.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

async fn forward(
    proxy: &Proxy,
    client: &Client<HttpConnector, Incoming>,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    // Blue-green previews: `x-tandem-preview` reaches the new version before the switch.
    let chosen =
        if request.headers().contains_key(PREVIEW_HEADER) { proxy.preview() } else { proxy.choose(request.headers()) };
    let Some((arm, authority)) = chosen else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "no upstream is serving this environment\n");
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(axum::http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
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
    let result = client.request(request).await;
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
