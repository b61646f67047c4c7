//! Secret scanning with gitleaks-format rules: the configuration file (rules with a regex, a
//! secret group, an entropy threshold, keywords and a path; allowlists per rule and global, with
//! paths, regexes on the secret, the match or the line, and stopwords) read unchanged, and the
//! scan of one file's text. Pure: text in, findings out.

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawConfig {
    rules: Vec<RawRule>,
    #[serde(flatten)]
    lists: RawLists,
}

/// `[allowlist]` (older files) and `[[allowlists]]`, at the top or in a rule.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct RawLists {
    allowlist: Option<RawAllowlist>,
    allowlists: Vec<RawAllowlist>,
}

impl RawLists {
    fn all(self) -> impl Iterator<Item = RawAllowlist> {
        self.allowlist.into_iter().chain(self.allowlists)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawRule {
    id: String,
    description: String,
    regex: Option<String>,
    secret_group: usize,
    entropy: Option<f64>,
    keywords: Vec<String>,
    path: Option<String>,
    #[serde(flatten)]
    lists: RawLists,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawAllowlist {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    regex_target: Option<String>,
    #[serde(default)]
    stopwords: Vec<String>,
}

/// What an allowlist's regexes look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Secret,
    Match,
    Line,
}

#[derive(Debug)]
struct Allowlist {
    /// Every check must hold (`condition = "AND"`), else any one.
    all: bool,
    paths: Vec<Regex>,
    regexes: Vec<Regex>,
    target: Target,
    stopwords: Vec<String>,
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    regex: Option<Regex>,
    secret_group: usize,
    entropy: Option<f64>,
    keywords: Vec<String>,
    path: Option<Regex>,
    allowlists: Vec<Allowlist>,
}

/// Rules and the global allowlists.
#[derive(Debug)]
pub struct Config {
    pub rules: Vec<Rule>,
    allowlists: Vec<Allowlist>,
}

/// A secret found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Finding {
    pub rule: String,
    pub description: String,
    pub file: String,
    /// 1-based line and column of the match.
    pub line: usize,
    pub column: usize,
    pub secret: String,
    pub entropy: f64,
    /// `file:rule:line`, as in `.gitleaksignore`.
    pub fingerprint: String,
}

fn compile(pattern: &str, what: &str) -> Result<Regex, String> {
    // As in Go: `\w`, `\d`, `\s` and `\b` are ASCII; large rules are allowed.
    RegexBuilder::new(&go_syntax(pattern))
        .unicode(false)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| format!("{what}: {e}"))
}

/// Go's regexp (RE2) reads a `{` that starts no repetition (`{n}`, `{n,}`, `{n,m}`) as a
/// literal brace; Rust's regex refuses it. Such braces are escaped; nothing else changes.
fn go_syntax(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 4);
    let (mut i, mut in_class) = (0, false);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if i + 1 < chars.len() => {
                out.push(c);
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '{' if !in_class => {
                let rest: String = chars[i + 1..].iter().take_while(|c| **c != '}').collect();
                let closed = chars[i + 1 + rest.len()..].first() == Some(&'}');
                let repetition = closed && {
                    let mut parts = rest.splitn(2, ',');
                    let first = parts.next().unwrap_or("");
                    !first.is_empty()
                        && first.chars().all(|c| c.is_ascii_digit())
                        && parts.next().is_none_or(|second| second.chars().all(|c| c.is_ascii_digit()))
                };
                if !repetition {
                    out.push_str("\\{");
                    i += 1;
                    continue;
                }
            }
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    out
}

fn allowlist(raw: RawAllowlist, what: &str) -> Result<Allowlist, String> {
    Ok(Allowlist {
        all: raw.condition.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("AND")),
        paths: raw.paths.iter().map(|p| compile(p, &format!("{what}: path"))).collect::<Result<_, _>>()?,
        regexes: raw.regexes.iter().map(|r| compile(r, &format!("{what}: regex"))).collect::<Result<_, _>>()?,
        target: match raw.regex_target.as_deref() {
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            _ => Target::Secret,
        },
        stopwords: raw.stopwords.iter().map(|s| s.to_ascii_lowercase()).collect(),
    })
}

/// Reads a gitleaks configuration; an error names the rule and what is wrong.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| format!("not a gitleaks configuration: {e}"))?;
    let mut allowlists = Vec::new();
    for (i, list) in raw.lists.all().enumerate() {
        allowlists.push(allowlist(list, &format!("global allowlist {}", i + 1))?);
    }
    let mut rules = Vec::new();
    for rule in raw.rules {
        let what = format!("rule `{}`", rule.id);
        if rule.regex.is_none() && rule.path.is_none() {
            return Err(format!("{what} has neither `regex` nor `path`"));
        }
        let mut lists = Vec::new();
        for (i, list) in rule.lists.all().enumerate() {
            lists.push(allowlist(list, &format!("{what}: allowlist {}", i + 1))?);
        }
        rules.push(Rule {
            regex: rule.regex.as_deref().map(|r| compile(r, &what)).transpose()?,
            path: rule.path.as_deref().map(|p| compile(p, &format!("{what}: path"))).transpose()?,
            keywords: rule.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
            id: rule.id,
            description: rule.description,
            secret_group: rule.secret_group,
            entropy: rule.entropy,
            allowlists: lists,
        });
    }
    Ok(Config { rules, allowlists })
}

/// The fingerprints of a `.gitleaksignore` file (`#` comments and blank lines left out).
pub fn parse_ignore(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// Shannon entropy of `text`, in bits per character.
pub fn entropy(text: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in text.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = text.chars().count() as f64;
    counts.values().map(|&c| c as f64 / n).map(|p| -p * p.log2()).sum()
}

impl Allowlist {
    fn allows(&self, path: &str, secret: &str, matched: &str, line: &str) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let mut checks = Vec::new();
        if !self.paths.is_empty() {
            checks.push(self.paths.iter().any(|p| p.is_match(path.as_bytes())));
        }
        if !self.regexes.is_empty() {
            checks.push(self.regexes.iter().any(|r| r.is_match(target.as_bytes())));
        }
        if !self.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            checks.push(self.stopwords.iter().any(|w| lower.contains(w.as_str())));
        }
        !checks.is_empty() && if self.all { checks.iter().all(|c| *c) } else { checks.iter().any(|c| *c) }
    }
}

impl Config {
    /// Every secret in one file's text, minus what the allowlists and `ignored` fingerprints
    /// (`.gitleaksignore` lines) allow.
    pub fn scan(&self, path: &str, text: &str, ignored: &[String]) -> Vec<Finding> {
        if self.allowlists.iter().any(|a| {
            a.paths.iter().any(|p| p.is_match(path.as_bytes())) && a.regexes.is_empty() && a.stopwords.is_empty()
        }) {
            return Vec::new();
        }
        let lower = text.to_ascii_lowercase();
        let mut found = Vec::new();
        for rule in &self.rules {
            if let Some(only) = &rule.path
                && !only.is_match(path.as_bytes())
            {
                continue;
            }
            let Some(regex) = &rule.regex else {
                // A path-only rule: the file itself is the finding.
                found.push(self.finding(rule, path, 1, 1, path.to_string(), 0.0));
                continue;
            };
            if !rule.keywords.is_empty() && !rule.keywords.iter().any(|k| lower.contains(k.as_str())) {
                continue;
            }
            for captures in regex.captures_iter(text.as_bytes()) {
                let whole = captures.get(0).expect("a match has group 0");
                let group = if rule.secret_group > 0 {
                    captures.get(rule.secret_group)
                } else {
                    captures.iter().skip(1).flatten().find(|m| !m.is_empty())
                }
                .unwrap_or(whole);
                let secret = String::from_utf8_lossy(group.as_bytes()).into_owned();
                let secret = secret.as_str();
                let matched = String::from_utf8_lossy(whole.as_bytes()).into_owned();
                let secret_entropy = entropy(secret);
                if rule.entropy.is_some_and(|min| secret_entropy <= min) {
                    continue;
                }
                let line_start = text.get(..whole.start()).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
                let line_end =
                    text.get(whole.end()..).and_then(|t| t.find('\n')).map_or(text.len(), |i| whole.end() + i);
                let line = String::from_utf8_lossy(&text.as_bytes()[line_start..line_end]).into_owned();
                let allowed =
                    rule.allowlists.iter().chain(&self.allowlists).any(|a| a.allows(path, secret, &matched, &line));
                if allowed {
                    continue;
                }
                let line_no = text.as_bytes()[..whole.start()].iter().filter(|b| **b == b'\n').count() + 1;
                let column = whole.start() - line_start + 1;
                let finding = self.finding(rule, path, line_no, column, secret.to_string(), secret_entropy);
                if !ignored.contains(&finding.fingerprint) {
                    found.push(finding);
                }
            }
        }
        found
    }

    /// [`Config::scan`] of a file as it is in `commit`: fingerprints of the form
    /// `commit:file:rule:line` apply too.
    pub fn scan_commit(&self, commit: &str, path: &str, text: &str, ignored: &[String]) -> Vec<Finding> {
        self.scan(path, text, ignored)
            .into_iter()
            .filter(|f| !ignored.contains(&format!("{commit}:{}", f.fingerprint)))
            .collect()
    }

    fn finding(&self, rule: &Rule, path: &str, line: usize, column: usize, secret: String, entropy: f64) -> Finding {
        Finding {
            rule: rule.id.clone(),
            description: rule.description.clone(),
            file: path.to_string(),
            line,
            column,
            secret,
            entropy,
            fingerprint: format!("{path}:{}:{line}", rule.id),
        }
    }
}
