//! TLS for probes: handshakes that verify against the system's authorities (plus a probe's own
//! `ca` file) or, with `tls-verify: false`, accept any certificate; the certificates' expiry read
//! from their DER; and `https://` requests over HTTP/1.1 on such a connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use http_body_util::{BodyExt, Full};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use spec::monitors::TlsOptions;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The system's certificate authorities, as Debian and most distributions keep them.
const SYSTEM_BUNDLES: &[&str] = &["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Client configurations by (verify, ca file, its modification time).
type Configs = Mutex<HashMap<(bool, Option<String>, Option<std::time::SystemTime>), Arc<ClientConfig>>>;

/// The client configuration for `options`, built once per (verify, ca file), and again when the
/// file changes.
fn config(options: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    let modified = options.ca_file.as_ref().and_then(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok());
    let key = (options.verify, options.ca_file.clone(), modified);
    let configs = CONFIGS.get_or_init(Mutex::default);
    if let Some(config) = configs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(config.clone());
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let mut config = if options.verify {
        let mut roots = RootCertStore::empty();
        let bundle = std::env::var("SSL_CERT_FILE")
            .ok()
            .or_else(|| SYSTEM_BUNDLES.iter().find(|p| std::path::Path::new(p).exists()).map(|p| p.to_string()));
        if let Some(bundle) = bundle {
            let certificates = CertificateDer::pem_file_iter(&bundle).map_err(|e| format!("{bundle}: {e}"))?;
            roots.add_parsable_certificates(certificates.flatten());
        }
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(file) = &options.ca_file {
            let certificates: Vec<_> = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("the probe's `ca` file {file}: {e}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("the probe's `ca` file {file}: {e}"))?;
            if certificates.is_empty() {
                return Err(format!("the probe's `ca` file {file} holds no PEM certificate"));
            }
            for certificate in certificates {
                roots.add(certificate).map_err(|e| format!("the probe's `ca` file {file}: {e}"))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny)).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    configs.lock().unwrap_or_else(|e| e.into_inner()).insert(key, config.clone());
    Ok(config)
}

/// `tls-verify: false`: any certificate is accepted (its expiry is still read and checked).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A verified (or, without verification, accepted) TLS connection to `address`, and the
/// earliest expiry of the certificates the server sent (Unix seconds).
pub async fn connect(
    address: &str,
    server_name: &str,
    options: &TlsOptions,
) -> Result<(TlsStream<TcpStream>, Option<i64>), String> {
    let config = config(options)?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| format!("`{server_name}` is not a server name TLS can check"))?;
    let tcp = TcpStream::connect(address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {address}: {e}"))?;
    let earliest = stream.get_ref().1.peer_certificates().unwrap_or_default().iter().filter_map(|c| not_after(c)).min();
    Ok((stream, earliest))
}

/// The host of `HOST:PORT` (brackets of an IPv6 address removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What an `https://` probe learns: the status, the body, and the certificate's expiry.
pub struct HttpsAnswer {
    pub status: u16,
    pub body: String,
    pub expiry: Option<i64>,
}

/// One HTTP/1.1 request over TLS. Redirects are not followed: a 3xx is the answer.
pub async fn request(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    options: &TlsOptions,
) -> Result<HttpsAnswer, String> {
    send(url, method, headers, Vec::new(), options).await
}

/// [`request`] with a body.
pub async fn send(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    options: &TlsOptions,
) -> Result<HttpsAnswer, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let (stream, expiry) = connect(&address, host_of(&address), options).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let driver = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let method =
        hyper::Method::from_bytes(method.as_bytes()).map_err(|_| format!("`{method}` is not an HTTP method"))?;
    let mut builder = hyper::Request::builder().method(method.clone()).uri(path).header("host", host_header(&uri));
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder.body(Full::new(bytes::Bytes::from(body))).map_err(|e| format!("{url}: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| format!("{url}: the body broke off: {e}"))?;
    driver.abort();
    Ok(HttpsAnswer { status, body: String::from_utf8_lossy(&body.to_bytes()).into_owned(), expiry })
}

fn host_header(uri: &hyper::Uri) -> String {
    let host = uri.host().unwrap_or_default();
    match uri.port_u16() {
        Some(port) if port != 443 => format!("{host}:{port}"),
        _ => host.to_string(),
    }
}

/// The end of a certificate's validity (Unix seconds), read from its DER:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, … }, … }.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, certificate, _) = element(der)?;
    let (_, mut tbs, _) = element(certificate)?;
    let (tag, _, rest) = element(tbs)?;
    if tag == 0xa0 {
        tbs = rest; // the explicit version
    }
    // serialNumber, signature, issuer.
    for _ in 0..3 {
        tbs = element(tbs)?.2;
    }
    let (_, validity, _) = element(tbs)?;
    let (_, _, rest) = element(validity)?; // notBefore
    let (tag, time, _) = element(rest)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let full = match tag {
        // UTCTime: YYMMDDHHMMSS, years 50–99 are 19xx.
        0x17 => {
            let year: u32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if year >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_string(), // GeneralizedTime: YYYYMMDDHHMMSS
        _ => return None,
    };
    let stamp = format!(
        "{}-{}-{}T{}:{}:{}Z",
        full.get(0..4)?,
        full.get(4..6)?,
        full.get(6..8)?,
        full.get(8..10)?,
        full.get(10..12)?,
        full.get(12..14)?
    );
    stamp.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// One DER element of `input`: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)? as usize;
    let (length, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let length = input.get(2..2 + n)?.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (length, 2 + n)
    };
    let contents = input.get(header..header.checked_add(length)?)?;
    Some((tag, contents, &input[header + length..]))
}
