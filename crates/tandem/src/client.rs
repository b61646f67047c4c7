//! Commands that talk to a Tandem server over its API (`TANDEM_URL`, `TANDEM_TOKEN`).

use anyhow::{Context, Result, anyhow, bail};
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

    /// `GET` a path and read the answer as `T`.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(reqwest::Method::GET, path)?).await
    }

    /// `POST` a body (or none) to a path and read the answer as `T`.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T> {
        let mut request = self.request(reqwest::Method::POST, path)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `GET` a path answered with text.
    pub async fn text(&self, path: &str) -> Result<String> {
        self.answer(self.request(reqwest::Method::GET, path)?).await
    }

    /// `DELETE` a path and read the answer as `T`.
    pub async fn delete<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.request(reqwest::Method::DELETE, path)?).await
    }

    /// A call answered with no body (204): `PUT` with a body, or `DELETE`.
    pub async fn call_empty(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<()> {
        let mut request = self.request(method, path)?;
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request).await.map(|_| ())
    }

    /// The answer's text, or its error (with the server's code and message) as an error.
    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<String> {
        let response = request.send().await.with_context(|| format!("cannot reach the server at {}\n  hint: start it with `tandem server` or `tandem up`, or set TANDEM_URL", self.base))?;
        let status = response.status();
        let text = response.text().await.context("the server's answer broke off")?;
        if !status.is_success() {
            return Err(match serde_json::from_str::<api::ErrorBody>(&text) {
                Ok(body) => anyhow!("{} ({}, HTTP {})", body.error.message, body.error.code, status.as_u16()),
                Err(_) => anyhow!("{} (HTTP {})", text.trim(), status.as_u16()),
            });
        }
        Ok(text)
    }

    async fn send<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let text = self.answer(request).await?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "the server's answer does not read as this CLI expects (is the server another version?): {}",
                text.chars().take(200).collect::<String>()
            )
        })
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
                    let lines: Vec<api::LogLine> =
                        serde_json::from_str(data).context("a log event does not read as lines")?;
                    for line in &lines {
                        print_line(line);
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

pub fn print_line(line: &api::LogLine) {
    println!("[{}] {}", line.job, line.text);
}

/// An optional field for people: empty when absent.
pub fn or_empty(value: &Option<impl ToString>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// Prints a value as pretty JSON, for `--format json`.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
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

pub fn print_runs(list: &api::RunList, format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(list);
    }
    let rows: Vec<Vec<String>> = list
        .runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.status.as_str().to_string(),
                r.workflow.clone(),
                r.event.clone(),
                r.git_ref.trim_start_matches("refs/heads/").to_string(),
                r.sha.chars().take(10).collect(),
                r.created.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no runs yet");
    } else {
        table(&["RUN", "STATUS", "WORKFLOW", "EVENT", "REF", "COMMIT", "QUEUED"], &rows);
    }
    Ok(())
}

pub fn print_run(detail: &api::RunDetail, format: Format) -> Result<()> {
    if format == Format::Json {
        return print_json(detail);
    }
    let run = &detail.run;
    println!(
        "run {}  {}  {} on {} at {}",
        run.id,
        run.status.as_str(),
        run.workflow,
        run.git_ref,
        run.sha.chars().take(12).collect::<String>()
    );
    if let Some(reason) = &run.reason {
        println!("reason: {reason}");
    }
    println!(
        "queued {}  started {}  finished {}  attempt {}",
        run.created,
        or_empty(&run.started),
        or_empty(&run.finished),
        run.attempt
    );
    let Some(report) = detail.report.as_ref().filter(|r| !r.jobs.is_empty()) else {
        return Ok(());
    };
    let mut rows = Vec::new();
    for job in &report.jobs {
        rows.push(vec![job.name.clone(), String::new(), job.status.clone(), format!("{}s", job.duration)]);
        for step in &job.steps {
            rows.push(vec![
                String::new(),
                step.name.chars().take(60).collect(),
                step.status.clone(),
                format!("{}s", step.duration),
            ]);
        }
    }
    println!();
    table(&["JOB", "STEP", "STATUS", "DURATION"], &rows);
    Ok(())
}
