//! Code owners in GitHub's `CODEOWNERS` syntax and precedence (the last matching pattern wins),
//! and what a change still needs before it may enter the merge queue.

use std::collections::BTreeMap;

/// One line of a `CODEOWNERS` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    /// `@user`, `@org/team` or an e-mail address; none: the paths have no owner.
    pub owners: Vec<String>,
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeOwners {
    pub rules: Vec<Rule>,
}

/// Where `CODEOWNERS` may live, in GitHub's order.
pub const LOCATIONS: [&str; 3] = [".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"];

impl CodeOwners {
    /// Reads a file; a line that cannot be a rule is an error with its line number.
    pub fn parse(text: &str) -> Result<CodeOwners, String> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split(" #").next().unwrap_or("").trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let pattern = words.next().unwrap_or_default().to_string();
            if pattern.starts_with('!') || pattern.contains("[") {
                return Err(format!(
                    "line {}: `{pattern}`: CODEOWNERS has no negation (`!`) nor character ranges (`[ ]`)",
                    i + 1
                ));
            }
            let owners: Vec<String> = words.map(str::to_string).collect();
            if let Some(bad) = owners.iter().find(|o| !o.starts_with('@') && !o.contains('@')) {
                return Err(format!(
                    "line {}: `{bad}` is not an owner: `@user`, `@org/team` or an e-mail address",
                    i + 1
                ));
            }
            rules.push(Rule { pattern, owners, line: i + 1 });
        }
        Ok(CodeOwners { rules })
    }

    /// The owners of `path`: those of the last rule that matches it (none: nobody owns it).
    pub fn owners_of(&self, path: &str) -> Option<&Rule> {
        self.rules.iter().rev().find(|rule| matches(&rule.pattern, path))
    }
}

/// Whether a `CODEOWNERS` (gitignore-style) pattern matches `path` or a directory above it.
pub fn matches(pattern: &str, path: &str) -> bool {
    let directory_only = pattern.ends_with('/');
    let trimmed = pattern.trim_end_matches('/');
    let anchored = trimmed.starts_with('/') || trimmed.contains('/');
    let trimmed = trimmed.trim_start_matches('/');
    if trimmed.is_empty() {
        return false;
    }
    let wanted: Vec<&str> = trimmed.split('/').collect();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // The pattern may name the path itself or any directory above it (everything inside a
    // matched directory matches). A directory-only pattern never names the file itself.
    let last = if directory_only { parts.len() - 1 } else { parts.len() };
    if anchored {
        // `docs/*` names the files directly in docs, not those deeper (unlike gitignore).
        let first = if trimmed.ends_with("/*") { last } else { 1 };
        (first..=last).any(|n| segments(&wanted, &parts[..n]))
    } else {
        (0..last).any(|i| glob(wanted[0], parts[i]))
    }
}

/// Pattern segments against path segments, `**` standing for any number of directories.
fn segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| segments(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((name, path_rest)) => glob(first, name) && segments(rest, path_rest),
            None => false,
        },
    }
}

/// `*` (any characters) and `?` (one) within one path segment.
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// What a change has, to be weighed against what its repository requires.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub author: String,
    /// Who approved the current code (approvals of an earlier revision whose code differs are
    /// not here).
    pub approvers: Vec<String>,
    /// Teams (`org/team` as CODEOWNERS names them, or a bare team name) and their members.
    pub teams: BTreeMap<String, Vec<String>>,
    pub touched: Vec<String>,
    pub owners: Option<CodeOwners>,
    pub required_approvals: usize,
    /// Each check of the current revision: (name, `success`, `failure`, `queued`, …).
    pub checks: Vec<(String, String)>,
    pub unresolved_comments: usize,
}

/// What is still missing, in words; empty when the change may enter the queue.
pub fn missing(standing: &Standing) -> Vec<String> {
    let mut missing = Vec::new();
    let approvers: Vec<&String> = standing.approvers.iter().filter(|a| **a != standing.author).collect();
    if approvers.len() < standing.required_approvals {
        missing.push(format!(
            "{} approval(s) from someone other than its author, {} so far",
            standing.required_approvals,
            approvers.len()
        ));
    }
    if let Some(owners) = &standing.owners {
        let mut unowned: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for path in &standing.touched {
            let Some(rule) = owners.owners_of(path) else { continue };
            if rule.owners.is_empty() {
                continue;
            }
            let approved = rule.owners.iter().any(|owner| {
                let name = owner.trim_start_matches('@');
                approvers.iter().any(|a| a.as_str() == name)
                    || standing.teams.iter().any(|(team, members)| {
                        (team == name || name.rsplit('/').next() == Some(team.as_str()))
                            && members.iter().any(|m| approvers.contains(&m))
                    })
            });
            if !approved {
                unowned.entry(rule.owners.join(" ")).or_default().push(path.clone());
            }
        }
        for (owners, paths) in unowned {
            missing.push(format!("an approval from {owners} (code owners of {})", paths.join(", ")));
        }
    }
    if standing.checks.is_empty() {
        missing.push("checks: no run of its latest revision yet".to_string());
    }
    for (name, status) in &standing.checks {
        if status != "success" {
            missing.push(format!("check {name}: {status}"));
        }
    }
    if standing.unresolved_comments > 0 {
        missing.push(format!("{} unresolved comment(s)", standing.unresolved_comments));
    }
    missing
}
