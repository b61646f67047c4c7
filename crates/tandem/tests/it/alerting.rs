//! Receivers beyond webhooks, against real servers on loopback: email through a real SMTP server
//! (aiosmtpd, Debian's `python3-aiosmtpd`), a Slack-compatible incoming webhook, a mailer that
//! refuses (retried, its failure in the notification log), and a route muted by a time interval.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::monitoring::webhook_receiver;
use crate::server::{Server, http};

/// A real SMTP server that writes every message it accepts into a maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn smtp(dir: &std::path::Path) -> Smtp {
    let maildir = dir.join("maildir");
    let port = free_port();
    let child = Command::new("aiosmtpd")
        .args(["-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aiosmtpd (Debian's python3-aiosmtpd; `cargo xtask test` installs it)");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Smtp { child, port, maildir }
}

/// Every message in the maildir, as text (quoted-printable decoded).
fn mails(maildir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for entry in std::fs::read_dir(maildir.join(sub)).into_iter().flatten().flatten() {
            out.push(unquote(&std::fs::read_to_string(entry.path()).unwrap_or_default()));
        }
    }
    out
}

/// Decodes quoted-printable: soft line breaks and `=XX` escapes.
fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pages_reach_email_and_slack_a_refusing_mailer_is_retried_and_a_muted_route_waits() {
    let data = tempfile::tempdir().unwrap();
    let smtp = smtp(data.path());
    let (slack_port, slack) = webhook_receiver();
    let closed = free_port();
    let config = data.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            r#"global:
  smtp_from: tandem@example.org
  smtp_smarthost: 127.0.0.1:{smtp}
  smtp_require_tls: false
  resolve_timeout: 10m
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  routes:
    - matchers: [team=chat]
      receiver: chat
    - matchers: [team=broken]
      receiver: broken
    - matchers: [team=night]
      receiver: chat
      mute_time_intervals: [always]
time_intervals:
  - name: always
    time_intervals: [{{ times: [{{ start_time: '00:00', end_time: '24:00' }}] }}]
receivers:
  - name: mail
    email_configs: [{{ to: 'oncall@example.org, lead@example.org', send_resolved: true }}]
  - name: chat
    slack_configs: [{{ api_url: 'http://127.0.0.1:{slack_port}/services/T0/B0/secret', channel: '#ops', username: tandem, title: '{{{{ .CommonLabels.alertname }}}}' }}]
  - name: broken
    email_configs: [{{ to: ops@example.org, smarthost: '127.0.0.1:{closed}' }}]
"#,
            smtp = smtp.port
        ),
    )
    .unwrap();
    // The templated Slack title is reported, not fatal: the server starts and routes.
    let checked = crate::Run::from(
        Command::new(env!("CARGO_BIN_EXE_tandem")).args(["routes", "check"]).arg(&config).output().unwrap(),
    );
    assert_eq!(checked.code, 0, "{}", checked.all());
    assert!(checked.all().contains("templates are not evaluated"), "{}", checked.all());

    let server = Server::start_with(data.path(), None, &["--alertmanager-config", config.to_str().unwrap()]);
    let auth = format!("Bearer {}", server.token);
    let post = |body: &str| {
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        http(&server.addr, "POST", "/api/v2/alerts", &headers, body.as_bytes())
    };
    let (status, body) = post(
        r#"[{"labels": {"alertname": "DiskFull", "severity": "page", "instance": "db-1"}, "annotations": {"summary": "no space left on /var"}},
            {"labels": {"alertname": "QueueBacklog", "team": "chat", "severity": "ticket"}, "annotations": {"summary": "10k jobs waiting"}},
            {"labels": {"alertname": "Unreachable", "team": "broken", "severity": "page"}},
            {"labels": {"alertname": "NightlyBatchSlow", "team": "night", "severity": "ticket"}}]"#,
    );
    assert_eq!(status, 200, "{body}");

    // Email: one message to both addresses, subject in Alertmanager's style, the alert in the body.
    wait_until("the email", || !mails(&smtp.maildir).is_empty());
    let mail = mails(&smtp.maildir).remove(0);
    assert!(mail.contains("Subject: [FIRING:1] DiskFull"), "{mail}");
    assert!(mail.contains("oncall@example.org") && mail.contains("lead@example.org"), "{mail}");
    assert!(mail.contains("no space left on /var") && mail.contains("instance=db-1"), "{mail}");

    // Slack: an incoming-webhook message with a colour, a title (Tandem's own: the template was
    // not evaluated) and the alert's text.
    wait_until("the Slack message", || !slack.lock().unwrap().is_empty());
    let message = slack.lock().unwrap()[0].clone();
    assert_eq!(
        (message["channel"].as_str(), message["username"].as_str()),
        (Some("#ops"), Some("tandem")),
        "{message}"
    );
    let attachment = &message["attachments"][0];
    assert_eq!(attachment["color"], "danger", "{message}");
    assert_eq!(attachment["title"], "[FIRING:1] QueueBacklog", "{message}");
    assert!(attachment["text"].as_str().unwrap().contains("10k jobs waiting"), "{message}");

    // The mailer that refuses connections is retried, and each failure is in the log.
    wait_until("two failed attempts", || {
        let log = server.cli(&["notifications", "--format", "json"]);
        log.json()["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "notification.failed").count() >= 2
    });
    let table = server.cli(&["notifications"]);
    assert!(table.stdout.contains("mailto:ops@example.org") && table.stdout.contains("failed"), "{}", table.all());
    assert!(!table.stdout.contains("secret"), "a Slack URL's secret path is not logged: {}", table.all());

    // The muted route has told nobody; the others each told exactly once.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !slack.lock().unwrap().iter().any(|m| m.to_string().contains("NightlyBatchSlow")),
        "a muted route does not notify"
    );
    assert_eq!(slack.lock().unwrap().len(), 1, "told once");

    // Resolved: the email receiver (send_resolved) hears of it.
    let (status, _) = post(
        r#"[{"labels": {"alertname": "DiskFull", "severity": "page", "instance": "db-1"}, "endsAt": "2020-01-01T00:00:00Z"}]"#,
    );
    assert_eq!(status, 200);
    wait_until("the resolved email", || {
        mails(&smtp.maildir).iter().any(|m| m.contains("Subject: [RESOLVED:1] DiskFull"))
    });
}

#[test]
fn an_unacknowledged_incident_escalates_from_the_person_on_call_to_the_next_level_until_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let smtp = smtp(data.path());
    let (ana_port, ana) = webhook_receiver();
    let routes = data.path().join("alertmanager.yml");
    std::fs::write(
        &routes,
        format!(
            "global:\n  smtp_from: tandem@example.org\n  smtp_smarthost: 127.0.0.1:{}\n  smtp_require_tls: false\nroute:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
            smtp.port
        ),
    )
    .unwrap();
    let oncall = data.path().join("oncall.yml");
    std::fs::write(
        &oncall,
        format!(
            r#"users:
  ana: {{ webhook: 'http://127.0.0.1:{ana_port}/page' }}
  bo: {{ email: bo@example.org }}
schedules:
  primary:
    time_zone: Europe/Berlin
    layers:
      - users: [bo]
        rotation: weekly
escalation_policies:
  default:
    levels:
      - {{ notify: ['schedule:primary'], after: 2s }}
      - {{ notify: ['user:bo'], after: 2s }}
services: {{ shop: default }}
teams: {{ payments: {{ services: [shop] }} }}
"#
        ),
    )
    .unwrap();
    let server = Server::start_with(
        data.path(),
        None,
        &["--alertmanager-config", routes.to_str().unwrap(), "--oncall", oncall.to_str().unwrap()],
    );
    let now = server.cli(&["oncall", "--format", "json"]);
    assert_eq!(now.json()[0]["user"], "bo", "{}", now.all());
    let overridden = server.cli(&["oncall", "override", "primary", "ana", "--for", "1h"]);
    assert_eq!(overridden.code, 0, "{}", overridden.all());
    assert!(overridden.stdout.contains("primary") && overridden.stdout.contains("ana"), "{}", overridden.all());
    let now = server.cli(&["oncall", "--format", "json"]);
    assert_eq!(
        (now.json()[0]["user"].as_str(), now.json()[0]["next"].as_str()),
        (Some("ana"), Some("bo")),
        "{}",
        now.all()
    );

    let opened = server.cli(&["incident", "open", "Checkout fails", "--service", "shop"]);
    assert_eq!(opened.code, 0, "{}", opened.all());
    // Level 1: the person on call (ana, by the override) is paged through her webhook.
    wait_until("ana's page", || !ana.lock().unwrap().is_empty());
    let page = ana.lock().unwrap()[0].clone();
    assert_eq!((page["incident"]["id"].as_i64(), page["level"].as_i64()), (Some(1), Some(1)), "{page}");
    let ack_url = page["ack_url"].as_str().unwrap().to_string();
    assert!(page["text"].as_str().unwrap().contains("tandem incident ack 1"), "{page}");
    // Unacknowledged after 2 s: level 2, bo, by email.
    wait_until("bo's email", || !mails(&smtp.maildir).is_empty());
    let mail = mails(&smtp.maildir).remove(0);
    assert!(mail.contains("Subject: [Tandem] incident 1 (page): Checkout fails"), "{mail}");
    assert!(mail.contains("/ack/1?user=bo&key="), "{mail}");

    // A forged link is refused; ana's acknowledges, and the escalation stops.
    let path = ack_url.split_once("/ack/").map(|(_, rest)| format!("/ack/{rest}")).unwrap();
    let (status, body) = http(&server.addr, "POST", &path.replace("key=", "key=0"), &[], b"");
    assert_eq!(status, 403, "{body}");
    let (status, body) = http(&server.addr, "GET", &path, &[], b"");
    assert!(status == 200 && body.contains("Acknowledge as ana"), "{status} {body}");
    let (status, body) = http(&server.addr, "POST", &path, &[], b"");
    assert!(status == 200 && body.contains("acknowledged"), "{status} {body}");
    let shown = server.cli(&["incident", "show", "1", "--format", "json"]);
    let incident = &shown.json()["incident"];
    assert_eq!((incident["state"].as_str(), incident["acknowledged_by"].as_str()), (Some("acknowledged"), Some("ana")));
    // bo's link (from the email) resolves it.
    let bo_path =
        mail.split_once("/ack/").map(|(_, rest)| format!("/ack/{}", rest.split_whitespace().next().unwrap())).unwrap();
    let (status, body) = http(&server.addr, "POST", &format!("{bo_path}&action=resolve"), &[], b"");
    assert!(status == 200 && body.contains("resolved"), "{status} {body}");
    let pages_before = (ana.lock().unwrap().len(), mails(&smtp.maildir).len());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        (ana.lock().unwrap().len(), mails(&smtp.maildir).len()),
        pages_before,
        "no page after the acknowledgement"
    );
    let timeline: Vec<String> =
        shown.json()["timeline"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap().to_string()).collect();
    assert!(
        timeline.iter().any(|t| t.starts_with("paged ana via http://") && t.ends_with("(level 1)")),
        "{timeline:#?}"
    );
    assert!(timeline.iter().any(|t| t == "paged bo via mailto:bo@example.org (level 2)"), "{timeline:#?}");
    assert!(timeline.iter().any(|t| t == "acknowledged by ana"), "{timeline:#?}");
    let shown = server.cli(&["incident", "show", "1", "--format", "json"]);
    assert_eq!(shown.json()["incident"]["resolution"], "resolved by bo from the link in a page", "{}", shown.all());
    // DORA per team: the team's incident counts for its time to restore.
    let dora = server.cli(&["dora", "--team", "payments", "--format", "json"]);
    assert_eq!(dora.json()["services"], serde_json::json!(["shop"]), "{}", dora.all());
    assert!(dora.json()["time_to_restore"]["value"].as_f64().is_some(), "{}", dora.all());
    let unknown = server.cli(&["dora", "--team", "nobody"]);
    assert!(unknown.code != 0 && unknown.all().contains("no team is named `nobody`"), "{}", unknown.all());
}
