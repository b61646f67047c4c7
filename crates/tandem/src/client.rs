//! Commands that talk to a Tandem server over its API (`TANDEM_URL`, `TANDEM_TOKEN`).

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;

use crate::Format;

#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The server's address.
    #[arg(long, env = "TANDEM_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub url: String,
    /// An API token (the admin token is printed when the server first starts).
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client> {
        let http = reqwest::Client::builder().build().context("cannot create an HTTP client")?;
        Ok(Client { http, base: connection.url.trim_end_matches('/').to_string(), token: connection.token.clone() })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder> {
        let Some(token) = &self.token else {
            bail!(
                "no API token\n  hint: set TANDEM_TOKEN (the admin token is printed when the server first starts; `tandem token create NAME` makes another)"
            );
        };
        Ok(self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token))
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut request = self.request(method, path)?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}\n  hint: start it with `tandem server` or `tandem up`, or set TANDEM_URL", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"raw": text}));
        if !status.is_success() {
            let code = json.pointer("/error/code").and_then(|v| v.as_str()).unwrap_or("error");
            let message = json.pointer("/error/message").and_then(|v| v.as_str()).unwrap_or(&text);
            bail!("{message} ({code}, HTTP {})", status.as_u16());
        }
        Ok(json)
    }

    /// Streams a run's log as it is written, until the run ends. Returns the final status.
    pub async fn follow(&self, run: i64) -> Result<String> {
        let response = self
            .request(reqwest::Method::GET, &format!("/api/v1/runs/{run}/logs?follow=true"))?
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        if !response.status().is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("cannot follow run {run}: {text}");
        }
        let mut stream = response.bytes_stream();
        let mut buffer = String::new();
        let mut event = String::new();
        while let Some(chunk) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.context("the log stream broke off")?));
            while let Some(end) = buffer.find('\n') {
                let line = buffer[..end].trim_end_matches('\r').to_string();
                buffer.drain(..=end);
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_string();
                } else if let Some(data) = line.strip_prefix("data:") {
                    let data = data.trim_start();
                    if event == "end" {
                        return Ok(data.to_string());
                    }
                    if let Ok(serde_json::Value::Array(lines)) = serde_json::from_str::<serde_json::Value>(data) {
                        for line in lines {
                            print_line(&line);
                        }
                    }
                }
            }
        }
        Ok("unknown".to_string())
    }
}

/// Percent-encodes a value for use as one path segment (repository names hold slashes).
pub fn path_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn print_line(line: &serde_json::Value) {
    let job = line.get("job").and_then(|v| v.as_str()).unwrap_or("");
    let text = line.get("text").and_then(|v| v.as_str()).unwrap_or("");
    println!("[{job}] {text}");
}

/// A field as text for people: strings as they are, null or missing as empty, the rest as JSON.
pub fn text(value: &serde_json::Value, key: &str) -> String {
    match value.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Prints rows as aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..headers.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).chain([headers[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

pub fn print_runs(json: &serde_json::Value, format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(json).unwrap_or_default());
        return;
    }
    let rows: Vec<Vec<String>> = json["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(r, "id"),
                text(r, "status"),
                text(r, "workflow"),
                text(r, "event"),
                text(r, "ref").trim_start_matches("refs/heads/").to_string(),
                text(r, "sha").chars().take(10).collect(),
                text(r, "created"),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no runs yet");
    } else {
        table(&["RUN", "STATUS", "WORKFLOW", "EVENT", "REF", "COMMIT", "QUEUED"], &rows);
    }
}

pub fn print_run(run: &serde_json::Value, format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(run).unwrap_or_default());
        return;
    }
    println!(
        "run {}  {}  {} on {} at {}",
        text(run, "id"),
        text(run, "status"),
        text(run, "workflow"),
        text(run, "git_ref"),
        text(run, "sha").chars().take(12).collect::<String>()
    );
    if let Some(reason) = run.get("reason").and_then(|r| r.as_str()) {
        println!("reason: {reason}");
    }
    println!(
        "queued {}  started {}  finished {}  attempt {}",
        text(run, "created"),
        text(run, "started"),
        text(run, "finished"),
        text(run, "attempt")
    );
    let jobs = run.pointer("/report/jobs").and_then(|j| j.as_array()).cloned().unwrap_or_default();
    if jobs.is_empty() {
        return;
    }
    let mut rows = Vec::new();
    for job in &jobs {
        rows.push(vec![text(job, "name"), String::new(), text(job, "status"), format!("{}s", text(job, "duration"))]);
        for step in job["steps"].as_array().into_iter().flatten() {
            rows.push(vec![
                String::new(),
                text(step, "name").chars().take(60).collect(),
                text(step, "status"),
                format!("{}s", text(step, "duration")),
            ]);
        }
    }
    println!();
    table(&["JOB", "STEP", "STATUS", "DURATION"], &rows);
}
