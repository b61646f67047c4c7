//! Receivers of an Alertmanager configuration: `webhook_configs`, `slack_configs` (incoming
//! webhooks) and `email_configs` (SMTP), with the `global` defaults they fall back on. Go
//! templates in `title`, `text` or `html` are not evaluated: Tandem writes its own text, and says so.

use crate::diag::{Diagnostic, Span};
use crate::service::Checker;
use crate::yaml::Node;

#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub webhooks: Vec<Webhook>,
    pub slacks: Vec<Slack>,
    pub emails: Vec<Email>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub url: String,
    pub send_resolved: bool,
    /// At most this many alerts in one notification (0: all).
    pub max_alerts: usize,
}

/// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Slack {
    pub api_url: String,
    pub channel: Option<String>,
    pub username: Option<String>,
    /// A fixed title and text (templates are not evaluated).
    pub title: Option<String>,
    pub text: Option<String>,
    pub send_resolved: bool,
}

/// Mail over SMTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub to: String,
    pub from: String,
    /// `host:port`.
    pub smarthost: String,
    pub auth_username: Option<String>,
    pub auth_password: Option<String>,
    /// STARTTLS is required (Alertmanager's default); `false` speaks plain SMTP (a local relay).
    pub require_tls: bool,
    pub send_resolved: bool,
}

/// The `global` block: defaults of receivers, and how long an alert without an end lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    pub resolve_timeout_ms: u64,
    pub smtp_from: Option<String>,
    pub smtp_smarthost: Option<String>,
    pub smtp_auth_username: Option<String>,
    pub smtp_auth_password: Option<String>,
    pub smtp_require_tls: bool,
    pub slack_api_url: Option<String>,
}

impl Default for Global {
    fn default() -> Global {
        Global {
            resolve_timeout_ms: 5 * 60_000,
            smtp_from: None,
            smtp_smarthost: None,
            smtp_auth_username: None,
            smtp_auth_password: None,
            smtp_require_tls: true,
            slack_api_url: None,
        }
    }
}

/// A mapping's (key, value, key's place).
type Entries<'n> = Vec<(&'n str, &'n Node, Span)>;

const GLOBAL_KEYS: &[&str] = &[
    "resolve_timeout",
    "smtp_from",
    "smtp_smarthost",
    "smtp_auth_username",
    "smtp_auth_password",
    "smtp_require_tls",
    "slack_api_url",
];

fn boolean(node: Option<&Node>, default: bool) -> bool {
    match node.and_then(Node::as_scalar) {
        Some("true") => true,
        Some("false") => false,
        _ => default,
    }
}

impl Checker {
    pub(super) fn global(&mut self, node: &Node) -> Global {
        let mut global = Global::default();
        for (key, value, span) in self.entries(node, "`global`", &[]) {
            if !GLOBAL_KEYS.contains(&key) {
                self.push(Diagnostic::warning(
                    "unsupported",
                    span,
                    format!("`global.{key}` is not supported yet; it is ignored"),
                ));
                continue;
            }
            let text = || value.as_scalar().map(str::to_string);
            match key {
                "resolve_timeout" => match value.as_scalar().and_then(crate::rules::prometheus_duration) {
                    Some(ms) => global.resolve_timeout_ms = ms,
                    None => self.push(Diagnostic::error(
                        "wrong-type",
                        value.span,
                        "`resolve_timeout` must be a duration such as 5m",
                    )),
                },
                "smtp_from" => global.smtp_from = text(),
                "smtp_smarthost" => global.smtp_smarthost = text(),
                "smtp_auth_username" => global.smtp_auth_username = text(),
                "smtp_auth_password" => global.smtp_auth_password = text(),
                "smtp_require_tls" => global.smtp_require_tls = boolean(Some(value), true),
                _ => global.slack_api_url = text(),
            }
        }
        global
    }

    /// A field that Alertmanager expands as a Go template: kept only when it holds no template.
    fn literal(&mut self, node: Option<&Node>, key: &str) -> Option<String> {
        let node = node?;
        let text = node.as_scalar()?;
        if text.contains("{{") {
            self.push(Diagnostic::warning(
                "unsupported",
                node.span,
                format!("`{key}` is a template; templates are not evaluated, Tandem writes its own {key}"),
            ));
            return None;
        }
        Some(text.to_string())
    }

    fn configs<'n>(&mut self, value: &'n Node, what: &str, known: &[&str]) -> Vec<(Span, Entries<'n>)> {
        let Some(items) = value.as_seq() else {
            self.push(Diagnostic::error("wrong-type", value.span, format!("`{what}` must be a list")));
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let entries = self.entries(item, what, known);
            for (key, _, span) in &entries {
                if [
                    "http_config",
                    "url_file",
                    "api_url_file",
                    "timeout",
                    "tls_config",
                    "headers",
                    "html",
                    "text",
                    "fields",
                    "actions",
                ]
                .contains(key)
                    && !matches!(*key, "text" | "html" if what == "slack_configs")
                {
                    self.push(Diagnostic::warning(
                        "unsupported",
                        *span,
                        format!("`{key}` is not supported yet in {what}; it is ignored"),
                    ));
                }
            }
            out.push((item.span, entries));
        }
        out
    }

    pub(super) fn receiver(&mut self, node: &Node, global: &Global) -> Option<Receiver> {
        let entries = self.entries(node, "a receiver", &[]);
        let mut receiver =
            Receiver { name: String::new(), webhooks: Vec::new(), slacks: Vec::new(), emails: Vec::new() };
        let mut named = false;
        for (key, value, span) in entries {
            match key {
                "name" => {
                    if let Some(name) = self.string(value, "a receiver's `name`") {
                        receiver.name = name;
                        named = true;
                    }
                }
                "webhook_configs" => {
                    let known = ["url", "send_resolved", "max_alerts", "http_config", "url_file", "timeout"];
                    for (at, hook) in self.configs(value, "webhook_configs", &known) {
                        let field = |k: &str| hook.iter().find(|(key, ..)| *key == k).map(|(_, v, _)| *v);
                        let Some(url) = field("url").and_then(|n| self.string(n, "`url`")) else {
                            self.push(Diagnostic::error("missing-key", at, "a webhook has no `url`"));
                            continue;
                        };
                        let max_alerts =
                            field("max_alerts").and_then(|n| n.as_scalar()).and_then(|t| t.parse().ok()).unwrap_or(0);
                        let send_resolved = boolean(field("send_resolved"), true);
                        receiver.webhooks.push(Webhook { url, send_resolved, max_alerts });
                    }
                }
                "slack_configs" => {
                    let known = [
                        "api_url",
                        "api_url_file",
                        "channel",
                        "username",
                        "title",
                        "title_link",
                        "text",
                        "color",
                        "send_resolved",
                        "http_config",
                        "icon_emoji",
                        "icon_url",
                        "fallback",
                        "pretext",
                        "fields",
                        "actions",
                        "short_fields",
                        "footer",
                        "link_names",
                        "mrkdwn_in",
                        "callback_id",
                        "image_url",
                        "thumb_url",
                    ];
                    for (at, slack) in self.configs(value, "slack_configs", &known) {
                        let field = |k: &str| slack.iter().find(|(key, ..)| *key == k).map(|(_, v, _)| *v);
                        let api_url = field("api_url").and_then(|n| n.as_scalar()).map(str::to_string);
                        let Some(api_url) = api_url.or_else(|| global.slack_api_url.clone()) else {
                            self.push(
                                Diagnostic::error("missing-key", at, "a Slack receiver has no `api_url`")
                                    .hint("set its incoming webhook URL as `api_url`, or `global.slack_api_url`"),
                            );
                            continue;
                        };
                        let channel = self.literal(field("channel"), "channel");
                        let username = self.literal(field("username"), "username");
                        let title = self.literal(field("title"), "title");
                        let text = self.literal(field("text"), "text");
                        let send_resolved = boolean(field("send_resolved"), false);
                        receiver.slacks.push(Slack { api_url, channel, username, title, text, send_resolved });
                    }
                }
                "email_configs" => {
                    let known = [
                        "to",
                        "from",
                        "smarthost",
                        "auth_username",
                        "auth_password",
                        "auth_password_file",
                        "auth_secret",
                        "auth_identity",
                        "require_tls",
                        "send_resolved",
                        "hello",
                        "headers",
                        "html",
                        "text",
                        "tls_config",
                    ];
                    for (at, email) in self.configs(value, "email_configs", &known) {
                        let field = |k: &str| email.iter().find(|(key, ..)| *key == k).map(|(_, v, _)| *v);
                        let text = |k: &str| field(k).and_then(Node::as_scalar).map(str::to_string);
                        let to = self.literal(field("to"), "to");
                        let from = text("from").or_else(|| global.smtp_from.clone());
                        let smarthost = text("smarthost").or_else(|| global.smtp_smarthost.clone());
                        let (Some(to), Some(from), Some(smarthost)) = (to, from, smarthost) else {
                            self.push(
                                Diagnostic::error("missing-key", at, "an email receiver needs `to`, `from` and `smarthost`")
                                    .hint("`from` and `smarthost` may come from `global.smtp_from` and `global.smtp_smarthost`"),
                            );
                            continue;
                        };
                        if smarthost.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
                            let span = field("smarthost").map_or(at, |n| n.span);
                            self.push(
                                Diagnostic::error("bad-value", span, format!("`{smarthost}` is not host:port"))
                                    .expected("e.g. smtp.example.org:587"),
                            );
                            continue;
                        }
                        receiver.emails.push(Email {
                            to,
                            from,
                            smarthost,
                            auth_username: text("auth_username").or_else(|| global.smtp_auth_username.clone()),
                            auth_password: text("auth_password").or_else(|| global.smtp_auth_password.clone()),
                            require_tls: boolean(field("require_tls"), global.smtp_require_tls),
                            send_resolved: boolean(field("send_resolved"), false),
                        });
                    }
                }
                other if other.ends_with("_configs") => self.push(Diagnostic::warning(
                    "unsupported",
                    span,
                    format!(
                        "`{other}` is not supported yet: this receiver sends only to its webhooks, Slack and email"
                    ),
                )),
                other => {
                    self.push(Diagnostic::error("unknown-key", span, format!("unknown key `{other}` in a receiver")))
                }
            }
        }
        if !named {
            self.push(Diagnostic::error("missing-key", node.span, "a receiver has no `name`"));
            return None;
        }
        Some(receiver)
    }
}
