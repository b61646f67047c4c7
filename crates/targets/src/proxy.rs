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
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rollout::analysis::Arm;
use tokio::sync::mpsc;

mod chunked;
mod relay;

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
        let cookies = headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok());
        self.choose_by(|name| headers.get(name).and_then(|v| v.to_str().ok()), cookies)
    }

    /// [`Proxy::choose`] for a request whose header fields are read by `header` (the first
    /// field of a name) and whose `cookie` fields are `cookies`.
    fn choose_by<'a>(
        &self,
        header: impl Fn(&str) -> Option<&'a str>,
        cookies: impl Iterator<Item = &'a str>,
    ) -> Option<(Arm, Authority)> {
        let table = self.table.read().ok()?;
        let routing = &table.routing;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let by_header = routing.sticky_header.as_deref().and_then(header);
        let sticky = by_header.map(fnv).or_else(|| {
            let name = routing.sticky_cookie.as_deref()?;
            cookie_value(cookies, name).map(|value| fnv(&value))
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

/// The value of cookie `name` in a request's `cookie` header fields.
fn cookie_value<'a>(cookies: impl Iterator<Item = &'a str>, name: &str) -> Option<String> {
    cookies.flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// What the proxy answers: the upstream's body as it streams, or a short message of its own.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Upstream connections of one client connection, by upstream: HTTP/1.1 sends one request at a
/// time on a connection, so a client's requests can reuse the same upstream connection without a
/// shared pool (no lock, no idle list, no hand-off between tasks).
type Upstreams = Arc<std::sync::Mutex<Vec<(Authority, SendRequest<Incoming>)>>>;

/// Serves the proxy on `listener` until the returned future is dropped: HTTP/1.1 with keep-alive,
/// `TCP_NODELAY` on both sides, and each client connection with upstream connections of its own,
/// kept while they stay open. Plain requests take the direct path ([`relay`]); a connection that
/// sends anything else goes on on hyper ([`serve_hyper`]).
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
        tokio::spawn(relay::serve_connection(stream, proxy.clone()));
    }
}

/// Serves one client connection on plain hyper (no router in the way) until it closes.
async fn serve_hyper<Io>(io: Io, proxy: Arc<Proxy>)
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let upstreams: Upstreams = Arc::default();
    let service = hyper::service::service_fn(move |request| {
        let (proxy, upstreams) = (proxy.clone(), upstreams.clone());
        async move { Ok::<_, std::convert::Infallible>(forward(&proxy, &upstreams, request).await) }
    });
    // A client that goes away mid-request is not the proxy's problem.
    let _ = hyper::server::conn::http1::Builder::new().writev(false).serve_connection(TokioIo::new(io), service).await;
}

/// An open connection to `authority`: one this client connection used before, or a new one.
async fn connect(upstreams: &Upstreams, authority: &Authority) -> Result<SendRequest<Incoming>, String> {
    let reused = {
        let mut list = upstreams.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|(_, sender)| !sender.is_closed());
        list.iter().position(|(a, _)| a == authority).map(|i| list.swap_remove(i).1)
    };
    if let Some(sender) = reused {
        return Ok(sender);
    }
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // An upstream that closes its end (after each answer, for HTTP/1.0 servers) ends this.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `request` upstream; a request a reused connection could not take (the upstream had
/// closed it) is sent once more on a new connection.
async fn send(
    upstreams: &Upstreams,
    authority: &Authority,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, String> {
    let mut request = request;
    for attempt in 0..2 {
        let mut sender = connect(upstreams, authority).await?;
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                upstreams.lock().unwrap_or_else(|e| e.into_inner()).push((authority.clone(), sender));
                return Ok(response);
            }
            Err(mut error) => match error.take_message() {
                Some(unsent) if attempt == 0 => request = unsent,
                _ => return Err(error.into_error().to_string()),
            },
        }
    }
    Err("the upstream closed the connection".into())
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

/// Answers up to this many bytes are read whole before they are passed on.
const SMALL_BODY: u64 = 16 * 1024;

async fn forward(proxy: &Proxy, upstreams: &Upstreams, mut request: Request<Incoming>) -> Response<ProxyBody> {
    // Blue-green previews: `x-tandem-preview` reaches the new version before the switch.
    let chosen =
        if request.headers().contains_key(PREVIEW_HEADER) { proxy.preview() } else { proxy.choose(request.headers()) };
    let Some((arm, authority)) = chosen else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "no upstream is serving this environment\n");
    };
    // Origin form upstream (`/path?query`), as a client sends it to a server.
    if request.uri().authority().is_some() || request.uri().path_and_query().is_none() {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        let Ok(uri) = path.parse::<Uri>() else {
            return message(StatusCode::BAD_REQUEST, "bad request path\n");
        };
        *request.uri_mut() = uri;
    }
    if !request.headers().contains_key(axum::http::header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(axum::http::header::HOST, host);
    }
    let version = if arm == Arm::Canary { "canary" } else { "stable" };
    request.headers_mut().insert("x-tandem-version", HeaderValue::from_static(version));
    let started = Instant::now();
    let result = send(upstreams, &authority, request).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(response) => {
            let error = response.status().is_server_error();
            let status = response.status().as_u16();
            let _ = proxy.outcomes.send(Outcome { arm, status, error, latency_ms });
            // A small answer of known length is read whole first, so that its head and body
            // leave in one write instead of two.
            let small = response
                .headers()
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .is_some_and(|length| length <= SMALL_BODY);
            if small {
                use http_body_util::BodyExt;
                let (parts, body) = response.into_parts();
                return match body.collect().await {
                    Ok(whole) => Response::from_parts(parts, Either::Right(Full::new(whole.to_bytes()))),
                    Err(_) => message(StatusCode::BAD_GATEWAY, "the upstream's answer was cut short\n"),
                };
            }
            response.map(Either::Left)
        }
        Err(_) => {
            let _ = proxy.outcomes.send(Outcome { arm, status: 0, error: true, latency_ms });
            message(StatusCode::BAD_GATEWAY, "the upstream did not answer\n")
        }
    }
}
