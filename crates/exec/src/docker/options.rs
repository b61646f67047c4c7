//! The container `options:` Tandem understands, read like `docker create` flags.

#[allow(unused_imports)]
use super::*;

/// Splits an `options:` line like a shell would (quotes group words).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    let mut has_word = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if has_word || !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                    has_word = false;
                }
            }
            (None, c) => current.push(c),
        }
    }
    if has_word || !current.is_empty() {
        words.push(current);
    }
    words
}

/// `1s`, `500ms`, `2m` → nanoseconds, as the Engine API wants durations.
pub(super) fn nanos(text: &str) -> Result<i64, String> {
    let (number, unit) = text.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 5s or 500ms"))?;
    let scale = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(format!("`{text}` has an unknown unit; use ms, s, m or h")),
    };
    Ok((value * scale) as i64)
}

/// `512m`, `1g`, `1048576` → bytes.
pub(super) fn bytes(text: &str) -> Result<i64, String> {
    let lower = text.to_ascii_lowercase();
    let (number, scale) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('b') => (&lower[..lower.len() - 1], 1),
        _ => (lower.as_str(), 1),
    };
    number.parse::<f64>().map(|n| (n * scale as f64) as i64).map_err(|_| format!("`{text}` is not a size such as 512m"))
}

/// Applies `options:` (the `docker create` flags Tandem understands) to a container body.
pub(super) fn apply_options(
    options: &str,
    body: &mut ContainerCreateBody,
    host: &mut HostConfig,
) -> Result<(), String> {
    let words = split_words(options);
    let mut health = HealthConfig::default();
    let mut has_health = false;
    let mut i = 0;
    while i < words.len() {
        let (flag, inline) = match words[i].split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value.to_string())),
            _ => (words[i].clone(), None),
        };
        let mut value = || -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            words.get(i).cloned().ok_or_else(|| format!("option `{flag}` needs a value"))
        };
        match flag.as_str() {
            "--cpus" => {
                host.nano_cpus =
                    Some((value()?.parse::<f64>().map_err(|_| "`--cpus` needs a number".to_string())? * 1e9) as i64)
            }
            "-m" | "--memory" => host.memory = Some(bytes(&value()?)?),
            "-u" | "--user" => body.user = Some(value()?),
            "-e" | "--env" => body.env.get_or_insert_with(Vec::new).push(value()?),
            "-w" | "--workdir" => body.working_dir = Some(value()?),
            "--hostname" => body.hostname = Some(value()?),
            "--entrypoint" => body.entrypoint = Some(vec![value()?]),
            "--privileged" => host.privileged = Some(true),
            "--init" => host.init = Some(true),
            "--health-cmd" => {
                health.test = Some(vec!["CMD-SHELL".to_string(), value()?]);
                has_health = true;
            }
            "--health-interval" => health.interval = Some(nanos(&value()?)?),
            "--health-timeout" => health.timeout = Some(nanos(&value()?)?),
            "--health-start-period" => health.start_period = Some(nanos(&value()?)?),
            "--health-retries" => {
                health.retries = Some(value()?.parse().map_err(|_| "`--health-retries` needs a number".to_string())?)
            }
            "--no-healthcheck" => {
                health.test = Some(vec!["NONE".to_string()]);
                has_health = true;
            }
            other => {
                return Err(format!(
                    "container option `{other}` is not supported; supported: --cpus, --memory, --user, --env, --workdir, --hostname, --entrypoint, --privileged, --init, --health-*"
                ));
            }
        }
        i += 1;
    }
    if has_health {
        body.healthcheck = Some(health);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_like_a_shell() {
        assert_eq!(
            split_words(r#"--health-cmd "pg_isready -U x" --health-interval=2s -e 'A=b c'"#),
            ["--health-cmd", "pg_isready -U x", "--health-interval=2s", "-e", "A=b c"]
        );
        assert_eq!(split_words("  "), Vec::<String>::new());
        assert_eq!(nanos("500ms"), Ok(500_000_000));
        assert_eq!(bytes("512m"), Ok(512 << 20));
        let (mut body, mut host) = (ContainerCreateBody::default(), HostConfig::default());
        apply_options(
            "--cpus 1.5 --memory 64m --user 1000 --health-cmd 'true' --health-retries 3",
            &mut body,
            &mut host,
        )
        .unwrap();
        assert_eq!(
            (host.nano_cpus, host.memory, body.user.as_deref()),
            (Some(1_500_000_000), Some(64 << 20), Some("1000"))
        );
        assert_eq!(body.healthcheck.as_ref().and_then(|h| h.retries), Some(3));
        assert!(apply_options("--network host", &mut body, &mut host).unwrap_err().contains("not supported"));
    }
}
