//! TLS and https probes against a real TLS server (`openssl s_server`) on loopback, with
//! certificates made for the test: verification, server names, expiry, and JSON bodies.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use server::monitor::Scope;
use server::monitor::probes::{Outcome, ProbeState, check};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A certificate authority and a leaf for localhost/127.0.0.1 valid `days`, signed by it.
fn certificates(dir: &Path, days: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Tandem test CA"]);
    openssl(dir, &ca);
    let mut request = vec!["req", "-new"];
    request.extend(ec);
    request.extend(["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"]);
    openssl(dir, &request);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            "ext.cnf",
            "-out",
            "leaf.pem",
        ],
    );
}

/// `openssl s_server -WWW` serving `dir` over TLS; killed when dropped.
struct TlsServer {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(dir: &Path) -> TlsServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-cert", "leaf.pem", "-key", "leaf.key", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = TlsServer { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("openssl s_server did not listen on {port}");
}

async fn probe(yaml: &str) -> Outcome {
    let (monitors, diagnostics) = spec::monitors::parse(yaml);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let spec = monitors.unwrap().probes.remove(0);
    check(&ProbeState::new(Scope { service: None, environment: None }, spec, None)).await
}

#[tokio::test]
async fn tls_probes_verify_name_and_chain_and_read_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path(), "10");
    std::fs::write(dir.path().join("status.json"), r#"{"status": "ok", "checks": [{"db": "up"}]}"#).unwrap();
    let server = serve(dir.path()).await;
    let (port, ca) = (server.port, dir.path().join("ca.pem").display().to_string());

    // Trusted through the probe's `ca`, valid 10 days: enough for 5, not for the default 14.
    let ok = probe(&format!("probes:\n  c:\n    tls: 127.0.0.1:{port}\n    ca: {ca}\n    min-validity: 5d\n")).await;
    assert!(ok.ok, "{ok:?}");
    let expiry = ok.cert_expiry.expect("the certificate's expiry is read");
    let ten_days = jiff::Timestamp::now().as_second() + 10 * 86_400;
    assert!((expiry - ten_days).abs() < 3_600, "expiry {expiry}, expected about {ten_days}");
    let soon = probe(&format!("probes:\n  c:\n    tls: 127.0.0.1:{port}\n    ca: {ca}\n")).await;
    assert!(!soon.ok);
    assert!(soon.error.as_deref().unwrap().contains("expires in 10.0 days, within the 14.0 days"), "{soon:?}");
    assert_eq!(soon.cert_expiry, Some(expiry), "a failing probe still reports the expiry");

    // Not trusted by the system's authorities; accepted without verification.
    let unknown = probe(&format!("probes:\n  c:\n    tls: 127.0.0.1:{port}\n    min-validity: 1d\n")).await;
    assert!(!unknown.ok && unknown.error.as_deref().unwrap().contains("handshake"), "{unknown:?}");
    let unverified =
        probe(&format!("probes:\n  c:\n    tls: 127.0.0.1:{port}\n    tls-verify: false\n    min-validity: 1d\n"))
            .await;
    assert!(unverified.ok, "{unverified:?}");

    // The certificate names localhost and 127.0.0.1, not another host.
    let by_name = probe(&format!(
        "probes:\n  c:\n    tls: 127.0.0.1:{port}\n    server-name: localhost\n    ca: {ca}\n    min-validity: 1d\n"
    ))
    .await;
    assert!(by_name.ok, "{by_name:?}");
    let wrong_name = probe(&format!(
        "probes:\n  c:\n    tls: 127.0.0.1:{port}\n    server-name: shop.example\n    ca: {ca}\n    min-validity: 1d\n"
    ))
    .await;
    assert!(!wrong_name.ok, "{wrong_name:?}");

    // https with JSON paths.
    let https = |json: &str| {
        format!(
            "probes:\n  h:\n    http: https://127.0.0.1:{port}/status.json\n    ca: {ca}\n    expect-json: {json}\n"
        )
    };
    let good = probe(&https("{ $.status: ok, \"$.checks[0].db\": up }")).await;
    assert!(good.ok, "{good:?}");
    assert_eq!((good.status, good.cert_expiry), (Some(200), Some(expiry)));
    let bad = probe(&https("{ \"$.checks[0].db\": down }")).await;
    assert!(!bad.ok);
    assert_eq!(
        bad.error.as_deref(),
        Some(format!("https://127.0.0.1:{port}/status.json: $.checks[0].db is \"up\", expected `down`").as_str())
    );
    let missing = probe(&https("{ $.version: 3 }")).await;
    assert!(missing.error.as_deref().unwrap().contains("nothing at $.version"), "{missing:?}");
    let too_soon = probe(&format!(
        "probes:\n  h:\n    http: https://127.0.0.1:{port}/status.json\n    ca: {ca}\n    min-validity: 30d\n"
    ))
    .await;
    assert!(!too_soon.ok && too_soon.status == Some(200), "{too_soon:?}");
}

#[test]
fn certificate_expiry_is_read_as_openssl_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    // 100 years: past 2049, so the date is a GeneralizedTime rather than a UTCTime.
    for days in ["3", "36500"] {
        certificates(dir.path(), days);
        let pem = std::fs::read_to_string(dir.path().join("leaf.pem")).unwrap();
        let output = Command::new("openssl")
            .args(["x509", "-noout", "-enddate", "-dateopt", "iso_8601", "-in", "leaf.pem"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let expected: jiff::Timestamp = text.trim().trim_start_matches("notAfter=").replace(' ', "T").parse().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = server::encoding::decode(&body).unwrap();
        assert_eq!(server::monitor::tls::not_after(&der), Some(expected.as_second()), "{days} days");
    }
    assert_eq!(server::monitor::tls::not_after(b"\x30\x03\x02\x01"), None, "a truncated certificate is no date");
}
