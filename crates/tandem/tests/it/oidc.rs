//! Sign-in with OpenID Connect against a real provider (npm's `oidc-provider`, run by node on
//! loopback), in a real browser: the authorization code flow with PKCE, a user made on first
//! sign-in with the default role, and that role's limits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use thirtyfour::prelude::*;

use crate::web::{Killed, Up, chromedriver, wait_url};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_an_openid_connect_provider() {
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/npm/node_modules/oidc-provider/lib/index.js");
    assert!(module.is_file(), "oidc-provider is missing: `cargo xtask test` installs it into target/npm");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
    let (tandem_port, provider_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{tandem_port}");
    let provider = Command::new("node")
        .arg(&script)
        .arg(&module)
        .arg(provider_port.to_string())
        .arg(format!("{url}/signin/oidc/callback"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _provider = Killed(provider);
    wait_for_port(provider_port, "the OpenID provider");
    let data = tempfile::tempdir().unwrap();
    let server = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["server", "--listen", &format!("127.0.0.1:{tandem_port}"), "--data"])
        .arg(data.path())
        .args(["--oidc-issuer", &format!("http://127.0.0.1:{provider_port}"), "--oidc-client-id", "tandem"])
        .env("TANDEM_OIDC_CLIENT_SECRET", "tandem-test-secret")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Up { child: server, data: data.path().to_path_buf() };
    wait_for_port(tandem_port, "tandem server");

    let (_driver_process, port) = chromedriver();
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium").unwrap();
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage"] {
        caps.add_arg(arg).unwrap();
    }
    let driver = WebDriver::new(format!("http://127.0.0.1:{port}"), caps).await.unwrap();
    driver.goto(format!("{url}/account")).await.unwrap();
    wait_url(&driver, |u| u.contains("/signin")).await;
    driver.find(By::PartialLinkText("OpenID Connect")).await.unwrap().click().await.unwrap();
    // The provider's own login page, then its consent page.
    wait_url(&driver, |u| u.contains(&format!("127.0.0.1:{provider_port}"))).await;
    driver.find(By::Name("login")).await.unwrap().send_keys("ana").await.unwrap();
    driver.find(By::Name("password")).await.unwrap().send_keys("whatever-the-provider-checks").await.unwrap();
    driver.find(By::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = driver.current_url().await.unwrap().to_string();
        if current.starts_with(&url) {
            break;
        }
        if let Ok(button) = driver.find(By::Css("button[type=submit]")).await {
            let _ = button.click().await;
        }
        assert!(Instant::now() < deadline, "never came back from the provider: {current}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_url(&driver, |u| u.ends_with("/account")).await;
    let page = driver.find(By::Tag("main")).await.unwrap().text().await.unwrap();
    assert!(page.contains("viewer"), "made with the default role: {page}");
    // A viewer reads, and may not manage secrets.
    driver.goto(format!("{url}/runs")).await.unwrap();
    assert_eq!(driver.title().await.unwrap(), "Runs · Tandem");
    driver.goto(format!("{url}/secrets")).await.unwrap();
    let refused = driver.find(By::Tag("main")).await.unwrap().text().await.unwrap();
    assert!(refused.contains("`ana` is a viewer") && refused.contains("needs admin"), "{refused}");

    // The events of the sign-in (the user made, the grant, the session) keep the log's chain whole.
    let audit = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["audit", "verify", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    driver.quit().await.unwrap();
}
