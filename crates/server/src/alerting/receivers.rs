//! Telling receivers: webhooks (Alertmanager's JSON, version 4), Slack-compatible incoming
//! webhooks, and email over SMTP (STARTTLS unless `require_tls: false`). Each notification is
//! tried up to six times with doubling backoff; every attempt is an event of the notification log.

use std::time::Duration;

use serde_json::{Value, json};
use spec::alertmanager::{Email, Receiver, Slack, Webhook};

use crate::App;

/// One way a receiver is told.
#[derive(Debug, Clone)]
pub enum Channel {
    Webhook(Webhook),
    Slack(Slack),
    Email(Email),
}

impl Channel {
    pub fn of(receiver: &Receiver) -> Vec<Channel> {
        let hooks = receiver.webhooks.iter().cloned().map(Channel::Webhook);
        let slacks = receiver.slacks.iter().cloned().map(Channel::Slack);
        hooks.chain(slacks).chain(receiver.emails.iter().cloned().map(Channel::Email)).collect()
    }

    pub fn send_resolved(&self) -> bool {
        match self {
            Channel::Webhook(w) => w.send_resolved,
            Channel::Slack(s) => s.send_resolved,
            Channel::Email(e) => e.send_resolved,
        }
    }

    /// Where it goes, as the notification log shows it: a Slack URL's secret path is left out.
    pub fn to(&self) -> String {
        match self {
            Channel::Webhook(w) => w.url.clone(),
            Channel::Slack(s) => {
                let host = reqwest::Url::parse(&s.api_url).ok().and_then(|u| u.host_str().map(str::to_string));
                format!(
                    "slack:{}{}",
                    host.unwrap_or_default(),
                    s.channel.as_ref().map(|c| format!(" {c}")).unwrap_or_default()
                )
            }
            Channel::Email(e) => format!("mailto:{}", e.to),
        }
    }
}

/// `[FIRING:2] HighErrorRate shop`: the status, the count and the group's label values.
pub fn title(payload: &Value) -> String {
    let status = payload["status"].as_str().unwrap_or("firing").to_uppercase();
    let firing = payload["alerts"].as_array().map_or(0, |a| a.iter().filter(|a| a["status"] == "firing").count());
    let n = if status == "FIRING" { firing } else { payload["alerts"].as_array().map_or(0, Vec::len) };
    let values: Vec<&str> =
        payload["groupLabels"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str()).collect();
    format!("[{status}:{n}] {}", values.join(" "))
}

/// One line per alert: name, summary, labels.
pub fn lines(payload: &Value) -> Vec<String> {
    payload["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let labels: Vec<String> = a["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "alertname")
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            let summary = a["annotations"]["summary"].as_str().map(|s| format!(": {s}")).unwrap_or_default();
            format!(
                "{} {}{summary} ({}; since {})",
                a["status"].as_str().unwrap_or_default(),
                a["labels"]["alertname"].as_str().unwrap_or("alert"),
                labels.join(", "),
                a["startsAt"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

async fn attempt(client: &reqwest::Client, channel: &Channel, payload: &Value) -> Result<(), String> {
    let post = |url: &str, body: &Value| client.post(url).timeout(Duration::from_secs(10)).json(body).send();
    let answered = |result: Result<reqwest::Response, reqwest::Error>, to: String| match result {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("{to} answered {}", response.status())),
        Err(error) => Err(format!("{to}: {error}")),
    };
    match channel {
        Channel::Webhook(hook) => answered(post(&hook.url, payload).await, hook.url.clone()),
        Channel::Slack(slack) => {
            let firing = payload["status"] == "firing";
            let text = slack.text.clone().unwrap_or_else(|| lines(payload).join("\n"));
            let title = slack.title.clone().unwrap_or_else(|| title(payload));
            let mut body = json!({"attachments": [{
                "color": if firing { "danger" } else { "good" }, "title": title, "fallback": title,
                "text": text, "mrkdwn_in": ["text"],
            }]});
            if let Some(channel) = &slack.channel {
                body["channel"] = json!(channel);
            }
            if let Some(username) = &slack.username {
                body["username"] = json!(username);
            }
            answered(post(&slack.api_url, &body).await, channel.to())
        }
        Channel::Email(email) => send_mail(email, payload).await,
    }
}

async fn send_mail(email: &Email, payload: &Value) -> Result<(), String> {
    let mut body = lines(payload).join("\n");
    body.push_str("\n\nSent by Tandem (receiver ");
    body.push_str(payload["receiver"].as_str().unwrap_or_default());
    body.push_str(").\n");
    smtp(email, &title(payload), body).await
}

/// Mails a person through the SMTP server of the Alertmanager configuration's `global` block.
pub async fn mail(app: &App, to: &str, subject: &str, body: &str) -> Result<(), String> {
    let global = app.router.global().unwrap_or_default();
    let (Some(from), Some(smarthost)) = (global.smtp_from, global.smtp_smarthost) else {
        return Err("no SMTP server is configured: set `global.smtp_from` and `global.smtp_smarthost` in the Alertmanager configuration".into());
    };
    let email = Email {
        to: to.to_string(),
        from,
        smarthost,
        auth_username: global.smtp_auth_username,
        auth_password: global.smtp_auth_password,
        require_tls: global.smtp_require_tls,
        send_resolved: false,
    };
    smtp(&email, subject, body.to_string()).await
}

async fn smtp(email: &Email, subject: &str, body: String) -> Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let (host, port) =
        email.smarthost.rsplit_once(':').ok_or_else(|| format!("`{}` is not host:port", email.smarthost))?;
    let port: u16 = port.parse().map_err(|_| format!("`{}` is not host:port", email.smarthost))?;
    let mut builder = if email.require_tls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| format!("{host}: {e}"))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
    };
    builder = builder.port(port).timeout(Some(Duration::from_secs(10)));
    if let (Some(user), Some(password)) = (&email.auth_username, &email.auth_password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let mut message = Message::builder()
        .from(email.from.parse().map_err(|e| format!("from `{}`: {e}", email.from))?)
        .subject(subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN);
    for to in email.to.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        message = message.to(to.parse().map_err(|e| format!("to `{to}`: {e}"))?);
    }
    let message = message.body(body).map_err(|e| format!("the message cannot be built: {e}"))?;
    builder.build().send(message).await.map(|_| ()).map_err(|e| format!("smtp://{}: {e}", email.smarthost))
}

/// Sends one notification through one channel, with retries; every attempt is an event.
pub async fn deliver(app: &App, receiver: &str, key: &str, channel: Channel, mut payload: Value) {
    if let Channel::Webhook(hook) = &channel
        && hook.max_alerts > 0
        && let Some(alerts) = payload["alerts"].as_array_mut()
        && alerts.len() > hook.max_alerts
    {
        let cut = alerts.len() - hook.max_alerts;
        alerts.truncate(hook.max_alerts);
        payload["truncatedAlerts"] = json!(cut);
    }
    let client = reqwest::Client::new();
    let mut delay = Duration::from_millis(500);
    let fingerprints: Vec<Value> =
        payload["alerts"].as_array().into_iter().flatten().map(|a| a["fingerprint"].clone()).collect();
    let state: Vec<Value> = payload["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| json!([a["fingerprint"], a["status"] == "resolved"]))
        .collect();
    for n in 1..=6 {
        let outcome = attempt(&client, &channel, &payload).await;
        let record = json!({
            "receiver": receiver, "to": channel.to(), "group": key, "status": payload["status"],
            "alerts": fingerprints, "state": state, "attempt": n, "error": outcome.as_ref().err(),
        });
        let kind = if outcome.is_ok() { "notification.sent" } else { "notification.failed" };
        if let Err(error) = app.store.record_event(kind, &format!("receiver/{receiver}"), "tandem", record).await {
            tracing::error!("cannot record {kind}: {error}");
        }
        if outcome.is_ok() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
