//! The proxy's HTTP/1.1 handling seen from raw sockets on loopback: what reaches the upstream,
//! how answers of every framing come back, pipelining, requests the direct path hands to hyper,
//! and the proxy's own 502 and 503.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{only_stable, serve_proxy};
use targets::proxy::{Proxy, Routing};

/// Reads one request head and its `content-length` body from `stream` (`None` at its end).
async fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
            let length: usize =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
            if pending.len() >= end + 4 + length {
                return Some(pending.drain(..end + 4 + length).collect());
            }
        }
        let mut buffer = [0u8; 4096];
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buffer[..n]),
        }
    }
}

/// An upstream on raw sockets: answers each request with `answer(request)`, closing the
/// connection when that returns `true` with it. Counts its connections.
pub(super) async fn raw_upstream(answer: fn(&[u8]) -> (Vec<u8>, bool)) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(request) = read_request(&mut stream, &mut pending).await {
                    let (bytes, close) = answer(&request);
                    if stream.write_all(&bytes).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, connections)
}

/// Answers with the request it received, as its body.
fn echo(request: &[u8]) -> (Vec<u8>, bool) {
    let mut answer =
        format!("HTTP/1.1 200 OK\r\nx-upstream: echo\r\ncontent-length: {}\r\n\r\n", request.len()).into_bytes();
    answer.extend_from_slice(request);
    (answer, false)
}

/// Reads everything until the proxy closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut all)).await.unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads `n` answers with a `content-length` from `stream`, each as (head, body).
async fn read_answers(stream: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut pending = Vec::new();
    let mut answers = Vec::new();
    while answers.len() < n {
        let whole = read_request(stream, &mut pending).await.expect("the proxy closed the connection");
        let text = String::from_utf8_lossy(&whole).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        answers.push((head.to_string(), body.to_string()));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_upstream_rewritten_and_pipelined_answers_come_back_in_order() {
    let (upstream, connections) = raw_upstream(echo).await;
    let addr = serve_proxy(only_stable(upstream)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Two requests in one write: a POST with a body and hop-by-hop fields, then a GET without host.
    client
        .write_all(
            b"POST /submit?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, x-private\r\n\
              x-private: secret\r\nX-Tandem-Version: forged\r\ncontent-length: 5\r\n\r\nhello\
              GET /second HTTP/1.1\r\n\r\n",
        )
        .await
        .unwrap();
    let answers = read_answers(&mut client, 2).await;
    let (head, seen) = &answers[0];
    assert!(head.starts_with("HTTP/1.1 200 OK") && head.contains("x-upstream: echo"), "{head}");
    assert!(seen.starts_with("POST /submit?x=1 HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains("Host: example.test\r\n"), "the client's host is kept: {seen}");
    assert!(seen.contains("x-tandem-version: stable\r\n") && !seen.contains("forged"), "{seen}");
    assert!(!seen.to_lowercase().contains("connection") && !seen.contains("secret"), "hop-by-hop fields go: {seen}");
    assert!(seen.ends_with("\r\n\r\nhello"), "{seen}");
    let (_, seen) = &answers[1];
    assert!(seen.starts_with("GET /second HTTP/1.1\r\n"), "{seen}");
    assert!(seen.contains(&format!("host: {upstream}\r\n")), "a missing host names the upstream: {seen}");
    // A third request later on the same connection reuses the same upstream connection.
    client.write_all(b"GET /third HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    assert!(read_answers(&mut client, 1).await[0].1.starts_with("GET /third"));
    assert_eq!(connections.load(Ordering::SeqCst), 1, "one upstream connection for the three requests");
    // `connection: close` from the client: answered, then closed.
    client.write_all(b"GET /last HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await.unwrap();
    let rest = read_to_close(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 200 OK") && rest.contains("GET /last"), "{rest}");
}

/// Answers by path: chunked with trailers, early hints before a 204, a body ended by the close.
fn framings(request: &[u8]) -> (Vec<u8>, bool) {
    let text = String::from_utf8_lossy(request);
    if text.starts_with("GET /chunked") {
        let body = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\n";
        (body.into(), false)
    } else if text.starts_with("GET /early") {
        (
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 204 No Content\r\nx-after: hints\r\n\r\n"
                .to_vec(),
            false,
        )
    } else if text.starts_with("GET /broken") {
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n".to_vec(), false)
    } else {
        (b"HTTP/1.1 200 OK\r\n\r\nended by the close".to_vec(), true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_framed_by_chunks_by_nothing_or_by_the_close_pass_through() {
    let (upstream, connections) = raw_upstream(framings).await;
    let addr = serve_proxy(only_stable(upstream)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /chunked HTTP/1.1\r\nhost: a\r\n\r\nGET /early HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let expected = "x-after: hints\r\n\r\n";
    while !String::from_utf8_lossy(&seen).ends_with(expected) {
        let mut buffer = [0u8; 4096];
        let n = client.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(
        seen.contains("\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\nHTTP/1.1 204"),
        "chunks and trailers pass unchanged: {seen}"
    );
    assert!(!seen.contains("103"), "interim answers are not passed on: {seen}");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // A body ended by the upstream's close ends the client's connection too.
    client.write_all(b"GET /close HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let rest = read_to_close(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n\r\n") && rest.ends_with("ended by the close"), "{rest}");
    // Chunks that do not parse: the connection ends, and the bytes that do not parse stay behind.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET /broken HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let rest = read_to_close(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n") && !rest.contains("zz"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_direct_path_does_not_take_are_served_by_hyper() {
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let version = format!("{:?}", request.version());
        let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
        format!("{version} {}", String::from_utf8_lossy(&body))
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let addr = serve_proxy(only_stable(upstream)).await;
    // A plain request first, then a chunked body on the same connection.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"POST /a HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nplain").await.unwrap();
    assert!(read_answers(&mut client, 1).await[0].1.ends_with("plain"));
    client
        .write_all(b"POST /b HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nchunk\r\n4\r\ned!!\r\n0\r\n\r\n")
        .await
        .unwrap();
    let rest = read_to_close(&mut client).await;
    assert!(rest.starts_with("HTTP/1.1 200") && rest.ends_with("HTTP/1.1 chunked!!"), "{rest}");
    // A body longer than the direct path holds, and an HTTP/1.0 client.
    let large = "y".repeat(100_000);
    let mut client = TcpStream::connect(addr).await.unwrap();
    let request = format!("PUT /c HTTP/1.0\r\ncontent-length: {}\r\n\r\n{large}", large.len());
    client.write_all(request.as_bytes()).await.unwrap();
    let rest = read_to_close(&mut client).await;
    assert!(rest.starts_with("HTTP/1.0 200") && rest.ends_with(&large), "{}", &rest[..rest.len().min(300)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_upstream_is_a_503_and_a_dead_one_a_502_on_a_connection_that_stays_usable() {
    let empty =
        Routing { stable: vec![], canary: vec![], canary_weight: 0.0, sticky_header: None, sticky_cookie: None };
    let (proxy, mut outcomes) = Proxy::new(empty.clone());
    let addr = serve_proxy(proxy.clone()).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let (head, body) = read_answers(&mut client, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 503") && body.contains("no upstream"), "{head}\n{body}");
    // An address nothing listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    proxy.set_routing(Routing { stable: vec![dead], ..empty.clone() });
    client.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let (head, _) = read_answers(&mut client, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let outcome = outcomes.try_recv().unwrap();
    assert!(outcome.error && outcome.status == 0, "{outcome:?}");
    let (live, _) = raw_upstream(echo).await;
    proxy.set_routing(Routing { stable: vec![live], ..empty });
    client.write_all(b"GET /again HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let (head, body) = read_answers(&mut client, 1).await.remove(0);
    assert!(head.starts_with("HTTP/1.1 200") && body.starts_with("GET /again"), "{head}\n{body}");
    let outcome = outcomes.try_recv().unwrap();
    assert!(!outcome.error && outcome.status == 200, "{outcome:?}");
}

/// An HTTP/1.0 upstream (Python's `http.server`) closes its connection after each answer; the
/// client's connection stays open and reads HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upstream_does_not_close_the_clients_connection() {
    let (upstream, connections) =
        raw_upstream(|_| (b"HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6\r\ncontent-length: 2\r\n\r\nok".to_vec(), true))
            .await;
    let addr = serve_proxy(only_stable(upstream)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    for n in 0..5 {
        client.write_all(format!("GET /{n} HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes()).await.unwrap();
        let (head, body) = read_answers(&mut client, 1).await.remove(0);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nServer: BaseHTTP/0.6"), "{head}");
        assert_eq!(body, "ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5, "the upstream's connections are not reused");
}
