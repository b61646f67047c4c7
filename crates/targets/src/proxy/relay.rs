//! The proxy's direct HTTP/1.1 path: a client connection's requests are read with `httparse`,
//! sent on an upstream connection this client connection owns, and the answers passed back as
//! they came — head bytes unchanged, bodies framed by their length, their chunks or the
//! upstream's close. One task a client connection, no header maps, no hand-off between tasks.
//!
//! Only the plain case is handled here: HTTP/1.1 requests in origin form whose body, if any, has
//! a length up to [`MAX_HELD_BODY`]. At the first request that is anything else (HTTP/1.0, a
//! chunked or large body, `Expect`, `Upgrade`, an absolute URI, a head `httparse` refuses) the
//! connection, with the bytes already read, goes to the hyper path for the rest of its life.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::uri::Authority;
use bytes::{Buf, Bytes, BytesMut};
use rollout::analysis::Arm;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::chunked::Chunked;
use super::{Outcome, PREVIEW_HEADER, Proxy};

/// A request head longer than this goes to the hyper path (which refuses it).
const MAX_HEAD: usize = 64 * 1024;
/// Header fields `httparse` is given room for; more go to the hyper path.
const MAX_HEADERS: usize = 100;
/// A request body up to this length is held whole, so that it can be sent again when a reused
/// upstream connection turns out closed; a longer one goes to the hyper path.
pub const MAX_HELD_BODY: usize = 64 * 1024;
/// What is read from an upstream at a time while a long body passes.
const READ_SIZE: usize = 16 * 1024;

/// A request ready to go upstream: its head, rewritten, and its body are in the output buffer.
struct Request {
    arm: Arm,
    authority: Authority,
    /// Bytes of the client's input it took (head and body).
    consumed: usize,
    /// Answers to HEAD carry no body whatever their head says.
    head_method: bool,
    /// It may be sent twice (RFC 9110 §9.2.2), as when a reused connection was closed under it.
    idempotent: bool,
    /// The client asked to close the connection after this answer.
    close: bool,
}

enum Parsed {
    Complete(Request),
    /// More bytes are needed (`body` of them after the head, when the head is complete).
    Partial {
        head: Option<(usize, usize)>,
    },
    /// Not for this path: the hyper path takes the connection.
    Unusual,
    /// No upstream serves: answered 503 here.
    NoUpstream {
        consumed: usize,
        close: bool,
    },
}

/// How an answer's body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Answer {
    head_len: usize,
    status: u16,
    framing: Framing,
    /// The upstream's connection stays open after the answer.
    upstream_persists: bool,
    /// The client's connection stays open after the answer (it reads the same head, but as
    /// HTTP/1.1: an HTTP/1.0 upstream's answer does not close the client's connection).
    client_persists: bool,
    /// The answer's status line says HTTP/1.0 (passed on as HTTP/1.1).
    old_version: bool,
}

/// An upstream connection this client connection owns, with what was read from it.
struct Upstream {
    authority: Authority,
    stream: TcpStream,
    input: BytesMut,
}

/// Serves one client connection until it closes.
pub(super) async fn serve_connection(mut client: TcpStream, proxy: Arc<Proxy>) {
    let mut input = BytesMut::with_capacity(8 * 1024);
    let mut upstreams: Vec<Upstream> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let request = loop {
            let mut wanted = input.len() + 1;
            if !input.is_empty() {
                out.clear();
                match parse_request(&proxy, &input, &mut out) {
                    Parsed::Complete(request) => break request,
                    Parsed::Partial { head: Some((head, body)) } => wanted = head + body,
                    Parsed::Partial { head: None } if input.len() < MAX_HEAD => {}
                    Parsed::Partial { head: None } | Parsed::Unusual => {
                        let io = Rewind { prefix: input.freeze(), stream: client };
                        super::serve_hyper(io, proxy).await;
                        return;
                    }
                    Parsed::NoUpstream { consumed, close } => {
                        input.advance(consumed);
                        let text = "no upstream is serving this environment\n";
                        if client.write_all(&answer_of_our_own(503, "Service Unavailable", text, close)).await.is_err()
                            || close
                        {
                            return;
                        }
                        continue;
                    }
                }
            }
            input.reserve(wanted.saturating_sub(input.len()).max(4096));
            match client.read_buf(&mut input).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        input.advance(request.consumed);
        match exchange(&proxy, &mut client, &mut upstreams, &request, &out).await {
            Ok(persist) if persist && !request.close => {}
            Ok(_) | Err(_) => {
                let _ = client.shutdown().await;
                return;
            }
        }
    }
}

/// Sends the request in `out` upstream and its answer to the client. Returns whether the client
/// connection may carry another request; an error means the client connection is done.
async fn exchange(
    proxy: &Proxy,
    client: &mut TcpStream,
    upstreams: &mut Vec<Upstream>,
    request: &Request,
    out: &[u8],
) -> std::io::Result<bool> {
    let started = Instant::now();
    let mut reused_once = false;
    let (mut upstream, answer) = loop {
        let Some((mut upstream, reused)) = take_upstream(upstreams, &request.authority).await else {
            return bad_gateway(proxy, client, request, started).await;
        };
        match send_and_read_head(&mut upstream, out, request.head_method).await {
            Ok(answer) => break (upstream, answer),
            // A reused connection the upstream closed before answering: once more on a new one.
            Err(Failure::ClosedBeforeAnswer) if reused && !reused_once && request.idempotent => reused_once = true,
            Err(_) => return bad_gateway(proxy, client, request, started).await,
        }
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = proxy.outcomes.send(Outcome {
        arm: request.arm,
        status: answer.status,
        error: answer.status >= 500,
        latency_ms,
    });
    if answer.old_version {
        // `HTTP/1.0` → `HTTP/1.1`: the proxy speaks HTTP/1.1 to its client, whose connection
        // outlives the upstream's.
        upstream.input[7] = b'1';
    }
    let complete = pass_body(client, &mut upstream, &answer).await?;
    if complete && answer.upstream_persists && upstream.input.is_empty() {
        upstreams.push(upstream);
    }
    Ok(complete && answer.client_persists)
}

/// Answers 502 and records the failure; the client connection stays usable.
async fn bad_gateway(
    proxy: &Proxy,
    client: &mut TcpStream,
    request: &Request,
    started: Instant,
) -> std::io::Result<bool> {
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _ = proxy.outcomes.send(Outcome { arm: request.arm, status: 0, error: true, latency_ms });
    let text = "the upstream did not answer\n";
    client.write_all(&answer_of_our_own(502, "Bad Gateway", text, request.close)).await?;
    Ok(true)
}

fn answer_of_our_own(status: u16, reason: &str, text: &str, close: bool) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{connection}\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// An open connection to `authority`: one kept from an earlier request (unless the upstream has
/// closed it meanwhile), or a new one. Says whether it was kept.
async fn take_upstream(upstreams: &mut Vec<Upstream>, authority: &Authority) -> Option<(Upstream, bool)> {
    while let Some(at) = upstreams.iter().position(|u| &u.authority == authority) {
        let upstream = upstreams.swap_remove(at);
        // Nothing may be waiting on an idle connection: an end or stray bytes retire it.
        let mut probe = [0u8; 1];
        if let Err(error) = upstream.stream.try_read(&mut probe)
            && error.kind() == std::io::ErrorKind::WouldBlock
        {
            return Some((upstream, true));
        }
    }
    let stream = TcpStream::connect(authority.as_str()).await.ok()?;
    let _ = stream.set_nodelay(true);
    Some((Upstream { authority: authority.clone(), stream, input: BytesMut::with_capacity(READ_SIZE) }, false))
}

enum Failure {
    /// The connection ended before a byte of the answer arrived.
    ClosedBeforeAnswer,
    Other,
}

/// Writes the request and reads the answer's head. Interim (1xx) answers are dropped: a client
/// that asks for `100 Continue` is on the hyper path, and early hints are only hints.
async fn send_and_read_head(upstream: &mut Upstream, out: &[u8], head_method: bool) -> Result<Answer, Failure> {
    if upstream.stream.write_all(out).await.is_err() {
        return Err(Failure::ClosedBeforeAnswer);
    }
    let mut answered = false;
    loop {
        if !upstream.input.is_empty() {
            answered = true;
            match parse_answer(&upstream.input, head_method) {
                Ok(Some(answer)) if (100..200).contains(&answer.status) => {
                    // An interim answer (103 Early Hints, a stray 100): dropped; the final one follows.
                    if answer.status == 101 {
                        return Err(Failure::Other);
                    }
                    upstream.input.advance(answer.head_len);
                    continue;
                }
                Ok(Some(answer)) => return Ok(answer),
                Ok(None) if upstream.input.len() < MAX_HEAD => {}
                Ok(None) | Err(()) => return Err(Failure::Other),
            }
        }
        upstream.input.reserve(READ_SIZE);
        match upstream.stream.read_buf(&mut upstream.input).await {
            Ok(0) | Err(_) if !answered => return Err(Failure::ClosedBeforeAnswer),
            Ok(0) | Err(_) => return Err(Failure::Other),
            Ok(_) => {}
        }
    }
}

/// Passes the answer's head and body to the client. Returns whether the body ended where its
/// framing says (false: cut short or delimited by the upstream's close).
async fn pass_body(client: &mut TcpStream, upstream: &mut Upstream, answer: &Answer) -> std::io::Result<bool> {
    let input = &mut upstream.input;
    match answer.framing {
        Framing::Empty => {
            client.write_all(&input[..answer.head_len]).await?;
            input.advance(answer.head_len);
            Ok(true)
        }
        Framing::Length(length) => {
            // Head and as much of the body as arrived with it leave in one write.
            let first = (length as usize).min(input.len() - answer.head_len);
            client.write_all(&input[..answer.head_len + first]).await?;
            input.advance(answer.head_len + first);
            let mut left = length - first as u64;
            while left > 0 {
                input.reserve(READ_SIZE);
                if upstream.stream.read_buf(input).await.unwrap_or(0) == 0 {
                    return Ok(false);
                }
                let take = (left as usize).min(input.len());
                client.write_all(&input[..take]).await?;
                input.advance(take);
                left -= take as u64;
            }
            Ok(true)
        }
        Framing::Chunked => {
            let mut scanner = Chunked::default();
            let mut from = answer.head_len;
            loop {
                let end = match scanner.feed(&input[from..]) {
                    Ok(end) => end,
                    // The answer cannot be framed: the client sees it end with the connection.
                    Err(_) => {
                        client.write_all(&input[..from]).await?;
                        return Ok(false);
                    }
                };
                let take = end.map_or(input.len(), |n| from + n);
                client.write_all(&input[..take]).await?;
                input.advance(take);
                if scanner.is_done() {
                    return Ok(true);
                }
                from = 0;
                input.reserve(READ_SIZE);
                if upstream.stream.read_buf(input).await.unwrap_or(0) == 0 {
                    return Ok(false);
                }
            }
        }
        Framing::UntilClose => loop {
            client.write_all(&input[..]).await?;
            input.clear();
            input.reserve(READ_SIZE);
            if upstream.stream.read_buf(input).await.unwrap_or(0) == 0 {
                return Ok(false);
            }
        },
    }
}

/// A `content-length` value: digits only (no sign, no list), as RFC 9110 §8.6 has it.
fn length_value(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn is_token(value: &[u8], token: &str) -> bool {
    value.split(|b| *b == b',').any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses an answer's head: its status and how its body is framed.
fn parse_answer(bytes: &[u8], head_method: bool) -> Result<Option<Answer>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = response.code.ok_or(())?;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep_alive) = (false, false);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = length_value(header.value).ok_or(())?;
            if length.is_some_and(|l| l != value) {
                return Err(());
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides; anything else than chunked is read until the close.
            let last = header.value.rsplit(|b| *b == b',').next().unwrap_or_default().trim_ascii();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            close |= is_token(header.value, "close");
            keep_alive |= is_token(header.value, "keep-alive");
        }
    }
    let framing = if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    // Both a length and a coding: the coding wins, and neither connection is trusted further.
    let framed = framing != Framing::UntilClose && !(chunked.is_some() && length.is_some());
    let old_version = response.version == Some(0);
    let upstream_persists = framed && if old_version { keep_alive && !close } else { !close };
    Ok(Some(Answer { head_len, status, framing, upstream_persists, client_persists: framed && !close, old_version }))
}

/// Parses a request head from `bytes` and, when it is complete with its body, writes what goes
/// upstream to `out`: the request line, the header fields but the hop-by-hop ones and any
/// `x-tandem-version`, `host` when the client sent none, `x-tandem-version`, then the body.
fn parse_request(proxy: &Proxy, bytes: &[u8], out: &mut Vec<u8>) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial { head: None },
        Err(_) => return Parsed::Unusual,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version) else {
        return Parsed::Unusual;
    };
    if !path.starts_with('/') {
        return Parsed::Unusual;
    }
    let mut body: usize = 0;
    let mut close = false;
    let mut has_host = false;
    let mut named_by_connection: Vec<&[u8]> = Vec::new();
    for header in request.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = length_value(header.value).and_then(|l| usize::try_from(l).ok()) else {
                return Parsed::Unusual;
            };
            if length > MAX_HELD_BODY || (body != 0 && body != length) {
                return Parsed::Unusual;
            }
            body = length;
        } else if ["transfer-encoding", "expect", "upgrade"].iter().any(|n| name.eq_ignore_ascii_case(n)) {
            return Parsed::Unusual;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= is_token(header.value, "close");
            named_by_connection.extend(header.value.split(|b| *b == b',').map(<[u8]>::trim_ascii));
        } else if name.eq_ignore_ascii_case("host") {
            has_host = true;
        }
    }
    if bytes.len() < head_len + body {
        return Parsed::Partial { head: Some((head_len, body)) };
    }
    let header = |wanted: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(wanted))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let chosen = if header(PREVIEW_HEADER).is_some() {
        proxy.preview()
    } else {
        let cookies = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .filter_map(|h| std::str::from_utf8(h.value).ok());
        proxy.choose_by(|name| header(name), cookies)
    };
    let Some((arm, authority)) = chosen else {
        return Parsed::NoUpstream { consumed: head_len + body, close };
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for header in request.headers.iter() {
        let name = header.name;
        let hop_by_hop = ["connection", "keep-alive", "proxy-connection", "x-tandem-version"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
            || named_by_connection.iter().any(|n| n.eq_ignore_ascii_case(name.as_bytes()));
        if !hop_by_hop {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !has_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if arm == Arm::Canary {
        b"x-tandem-version: canary\r\n\r\n"
    } else {
        b"x-tandem-version: stable\r\n\r\n"
    });
    out.extend_from_slice(&bytes[head_len..head_len + body]);
    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE");
    Parsed::Complete(Request {
        arm,
        authority,
        consumed: head_len + body,
        head_method: method == "HEAD",
        idempotent,
        close,
    })
}

/// A client connection whose first bytes were already read: they are read again first.
pub(super) struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::proxy::Routing;

    fn proxy() -> Arc<Proxy> {
        let routing = Routing {
            stable: vec!["127.0.0.1:1".parse().unwrap()],
            canary: vec![],
            canary_weight: 0.0,
            sticky_header: Some("x-user".into()),
            sticky_cookie: Some("session".into()),
        };
        Proxy::new(routing).0
    }

    #[test]
    fn a_length_is_digits_only() {
        assert_eq!(length_value(b" 42 "), Some(42));
        for bad in [&b"+5"[..], b"-1", b"5, 5", b"", b"0x10", b"99999999999999999999999"] {
            assert_eq!(length_value(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // A request whose length has a sign is left to hyper, which refuses it.
        let mut out = Vec::new();
        let parsed = parse_request(&proxy(), b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello", &mut out);
        assert!(matches!(parsed, Parsed::Unusual));
    }

    proptest! {
        /// Whatever a client sends, parsing never panics; a request taken by the direct path
        /// goes upstream with its method first and the version header last, and consumes no
        /// more than was sent.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            if let Parsed::Complete(request) = parse_request(&proxy(), &bytes, &mut out) {
                prop_assert!(request.consumed <= bytes.len());
                prop_assert!(out.starts_with(&bytes[..bytes.iter().position(|b| *b == b' ').unwrap()]));
            }
        }

        /// Requests made of arbitrary field names and values: taken or handed to hyper, and when
        /// taken, every field that is not hop-by-hop reaches the upstream unchanged.
        #[test]
        fn fields_reach_the_upstream_unchanged(
            fields in proptest::collection::vec(("[a-zA-Z-]{1,12}", "[ -~]{0,20}"), 0..8),
            body in "[a-z]{0,20}",
        ) {
            let mut request = String::from("POST /p HTTP/1.1\r\n");
            for (name, value) in &fields {
                request.push_str(&format!("{name}: {value}\r\n"));
            }
            request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
            let mut out = Vec::new();
            if let Parsed::Complete(taken) = parse_request(&proxy(), request.as_bytes(), &mut out) {
                let sent = String::from_utf8(out).unwrap();
                prop_assert_eq!(taken.consumed, request.len());
                prop_assert!(sent.ends_with(&format!("x-tandem-version: stable\r\n\r\n{body}")), "{}", sent);
                // Fields `connection` names are hop-by-hop too.
                let named: Vec<String> = fields
                    .iter()
                    .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
                    .flat_map(|(_, value)| value.split(',').map(|t| t.trim().to_ascii_lowercase()))
                    .collect();
                for (name, value) in &fields {
                    let dropped = ["connection", "keep-alive", "proxy-connection", "x-tandem-version"]
                        .iter()
                        .any(|n| name.eq_ignore_ascii_case(n))
                        || named.contains(&name.to_ascii_lowercase());
                    if !dropped {
                        prop_assert!(sent.contains(&format!("{name}: {}\r\n", value.trim())), "{}", sent);
                    }
                }
            }
        }
    }
}
