//! Dependency vulnerabilities: the packages a repository locks (`Cargo.lock`, `package-lock.json`,
//! `requirements.txt`, `go.sum`) matched against advisories in OSV's format (an offline export:
//! a directory of `<ID>.json` records, as osv.dev publishes per ecosystem). Versions compare as
//! their ecosystem orders them closely enough for advisories: numeric dot-separated parts, then a
//! pre-release (which sorts before its release). And the same packages as a CycloneDX SBOM.

use std::cmp::Ordering;

/// A locked package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// OSV's ecosystem name: `crates.io`, `npm`, `PyPI`, `Go`.
    pub ecosystem: &'static str,
    pub name: String,
    pub version: String,
    /// The lock file it was read from.
    pub source: String,
}

/// The lock files this reads, by file name.
pub const LOCK_FILES: [&str; 4] = ["Cargo.lock", "package-lock.json", "requirements.txt", "go.sum"];

/// The package databases of operating systems in an image: Debian's and Alpine's.
pub const OS_DATABASES: [&str; 2] = ["var/lib/dpkg/status", "lib/apk/db/installed"];

/// The packages of one lock file or OS package database (`path` names it; its name says which
/// format).
pub fn packages(path: &str, text: &str) -> Result<Vec<Package>, String> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let package = |ecosystem, name: &str, version: &str| Package {
        ecosystem,
        name: name.to_string(),
        version: version.to_string(),
        source: path.to_string(),
    };
    let mut out = Vec::new();
    let database =
        OS_DATABASES.iter().find(|d| path.trim_start_matches('/') == **d || path.ends_with(&format!("/{d}")));
    match database.copied() {
        // Paragraphs of `Field: value`; only what is installed counts.
        Some("var/lib/dpkg/status") => {
            for paragraph in text.split("\n\n") {
                let field = |name: &str| {
                    paragraph
                        .lines()
                        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                        .map(str::trim)
                };
                if let (Some(name), Some(version)) = (field("Package"), field("Version"))
                    && field("Status").is_none_or(|s| s.ends_with(" installed"))
                {
                    out.push(package("Debian", name, version));
                }
            }
            out.sort();
            out.dedup();
            return Ok(out);
        }
        // Records of `X:value` lines, blank-line separated: `P:` the name, `V:` the version.
        Some(_) => {
            for record in text.split("\n\n") {
                let field = |key: &str| record.lines().find_map(|l| l.strip_prefix(key)).map(str::trim);
                if let (Some(name), Some(version)) = (field("P:"), field("V:")) {
                    out.push(package("Alpine", name, version));
                }
            }
            out.sort();
            out.dedup();
            return Ok(out);
        }
        None => {}
    }
    match file {
        "Cargo.lock" => {
            let value: toml::Value = toml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
            for entry in value.get("package").and_then(|p| p.as_array()).into_iter().flatten() {
                let (Some(name), Some(version)) =
                    (entry.get("name").and_then(|v| v.as_str()), entry.get("version").and_then(|v| v.as_str()))
                else {
                    continue;
                };
                // Only what comes from a registry: path and git dependencies have no advisories.
                if entry.get("source").and_then(|s| s.as_str()).is_some_and(|s| s.starts_with("registry+")) {
                    out.push(package("crates.io", name, version));
                }
            }
        }
        "package-lock.json" => {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{path}: {e}"))?;
            if let Some(map) = value["packages"].as_object() {
                for (key, entry) in map {
                    let Some(name) =
                        key.rsplit("node_modules/").next().filter(|n| !n.is_empty() && key.contains("node_modules/"))
                    else {
                        continue;
                    };
                    if let Some(version) = entry["version"].as_str() {
                        out.push(package("npm", name, version));
                    }
                }
            } else if let Some(map) = value["dependencies"].as_object() {
                for (name, entry) in map {
                    if let Some(version) = entry["version"].as_str() {
                        out.push(package("npm", name, version));
                    }
                }
            }
        }
        "requirements.txt" => {
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if let Some((name, version)) = line.split_once("==") {
                    let name = name.split('[').next().unwrap_or(name).trim();
                    let version = version.split([';', ' ']).next().unwrap_or("").trim();
                    if !name.is_empty() && !version.is_empty() {
                        out.push(package("PyPI", &name.to_lowercase().replace('_', "-"), version));
                    }
                }
            }
        }
        "go.sum" => {
            for line in text.lines() {
                let mut words = line.split_whitespace();
                if let (Some(module), Some(version)) = (words.next(), words.next())
                    && !version.ends_with("/go.mod")
                {
                    out.push(package("Go", module, version.trim_start_matches('v')));
                }
            }
        }
        _ => return Err(format!("{path}: not a lock file this reads ({})", LOCK_FILES.join(", "))),
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// One advisory of an OSV export, reduced to what matching needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Advisory {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    /// `critical`, `high`, `moderate`, `low` or `unknown`.
    pub severity: String,
    pub modified: String,
    affected: Vec<Affected>,
}

#[derive(Debug, Clone, PartialEq)]
struct Affected {
    ecosystem: String,
    name: String,
    versions: Vec<String>,
    /// (introduced, fixed or last_affected (inclusive)) pairs.
    ranges: Vec<(String, Option<String>, bool)>,
}

/// Reads one OSV record (JSON).
pub fn advisory(text: &str) -> Result<Advisory, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not an OSV record: {e}"))?;
    let id = value["id"].as_str().ok_or("an OSV record without `id`")?.to_string();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    let severity = value["database_specific"]["severity"]
        .as_str()
        .or_else(|| value["affected"][0]["database_specific"]["severity"].as_str())
        .map(|s| s.to_lowercase().replace("medium", "moderate"))
        .unwrap_or_else(|| cvss_severity(&value["severity"]));
    let mut affected = Vec::new();
    for entry in value["affected"].as_array().into_iter().flatten() {
        let mut ranges = Vec::new();
        for range in entry["ranges"].as_array().into_iter().flatten() {
            if range["type"].as_str() == Some("GIT") {
                continue;
            }
            let mut introduced: Option<String> = None;
            for event in range["events"].as_array().into_iter().flatten() {
                if let Some(v) = event["introduced"].as_str() {
                    introduced = Some(v.to_string());
                } else if let Some(v) = event["fixed"].as_str() {
                    ranges.push((introduced.take().unwrap_or_else(|| "0".into()), Some(v.to_string()), false));
                } else if let Some(v) = event["last_affected"].as_str() {
                    ranges.push((introduced.take().unwrap_or_else(|| "0".into()), Some(v.to_string()), true));
                }
            }
            if let Some(start) = introduced {
                ranges.push((start, None, false));
            }
        }
        affected.push(Affected {
            ecosystem: entry["package"]["ecosystem"].as_str().unwrap_or("").to_string(),
            name: entry["package"]["name"].as_str().unwrap_or("").to_string(),
            versions: strings(&entry["versions"]),
            ranges,
        });
    }
    Ok(Advisory {
        id,
        aliases: strings(&value["aliases"]),
        summary: value["summary"]
            .as_str()
            .or(value["details"].as_str())
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        severity,
        modified: value["modified"].as_str().unwrap_or("").to_string(),
        affected,
    })
}

/// The severity a CVSS v3 vector implies, roughly (from its impact metrics): OSV records of
/// some databases carry only the vector.
fn cvss_severity(severity: &serde_json::Value) -> String {
    let Some(vector) = severity.as_array().and_then(|a| a.iter().find_map(|s| s["score"].as_str())) else {
        return "unknown".into();
    };
    let metric = |key: &str| vector.split('/').find_map(|p| p.strip_prefix(&format!("{key}:")));
    let high = ["C", "I", "A"].iter().filter(|k| metric(k) == Some("H")).count();
    let network = metric("AV") == Some("N") && metric("PR") == Some("N");
    match (high, network) {
        (3, true) => "critical",
        (h, _) if h >= 2 => "high",
        (h, _) if h >= 1 => "moderate",
        _ => "low",
    }
    .into()
}

impl Advisory {
    /// Whether `package` at its version is affected.
    pub fn affects(&self, package: &Package) -> bool {
        self.affected.iter().any(|a| {
            a.ecosystem.split(':').next() == Some(package.ecosystem)
                && names_match(package.ecosystem, &a.name, &package.name)
                && (a.versions.iter().any(|v| v == &package.version)
                    || a.ranges.iter().any(|(introduced, end, inclusive)| {
                        compare(&package.version, introduced) != Ordering::Less
                            && match end {
                                None => true,
                                Some(end) if *inclusive => compare(&package.version, end) != Ordering::Greater,
                                Some(end) => compare(&package.version, end) == Ordering::Less,
                            }
                    }))
        })
    }
}

fn names_match(ecosystem: &str, a: &str, b: &str) -> bool {
    if ecosystem == "PyPI" { a.to_lowercase().replace('_', "-") == b.to_lowercase().replace('_', "-") } else { a == b }
}

/// Orders two versions: numeric parts in turn (a missing part is 0), then a pre-release after
/// `-` (or PEP 440's `a`/`b`/`rc`) before the release itself.
pub fn compare(a: &str, b: &str) -> Ordering {
    let split = |v: &str| -> (Vec<u64>, Option<String>) {
        let v = v.trim().trim_start_matches('v');
        let v = v.split('+').next().unwrap_or(v);
        let (release, pre) = match v.split_once('-') {
            Some((release, pre)) => (release.to_string(), Some(pre.to_string())),
            None => {
                // PEP 440: 1.2rc1, 1.2a3, 1.2b1, 1.2.dev4
                match v.find(|c: char| c.is_ascii_alphabetic()) {
                    Some(at) => (v[..at].trim_end_matches('.').to_string(), Some(v[at..].to_string())),
                    None => (v.to_string(), None),
                }
            }
        };
        let parts = release
            .split('.')
            .map(|p| p.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0))
            .collect();
        (parts, pre)
    };
    let (pa, prea) = split(a);
    let (pb, preb) = split(b);
    for i in 0..pa.len().max(pb.len()) {
        match pa.get(i).unwrap_or(&0).cmp(pb.get(i).unwrap_or(&0)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (prea, preb) {
        (None, None) => Ordering::Equal,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(&y),
    }
}

/// A vulnerable package.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub package: Package,
    pub advisory: String,
    pub aliases: Vec<String>,
    pub severity: String,
    pub summary: String,
}

/// Every (package, advisory) pair where the advisory affects the package.
pub fn scan(packages: &[Package], advisories: &[Advisory]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for package in packages {
        for advisory in advisories.iter().filter(|a| a.affects(package)) {
            findings.push(Finding {
                package: package.clone(),
                advisory: advisory.id.clone(),
                aliases: advisory.aliases.clone(),
                severity: advisory.severity.clone(),
                summary: advisory.summary.clone(),
            });
        }
    }
    findings
}

/// An OSV export read from a directory (every `*.json` below it): its advisories, the newest
/// `modified` date among them (the data's date), and the records that could not be read.
pub fn load_export(dir: &std::path::Path) -> Result<(Vec<Advisory>, String, Vec<String>), String> {
    let mut advisories = Vec::new();
    let mut unreadable = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        let entries =
            std::fs::read_dir(&at).map_err(|e| format!("cannot read the OSV export {}: {e}", at.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| advisory(&t)) {
                    Ok(advisory) => advisories.push(advisory),
                    Err(error) => unreadable.push(format!("{}: {error}", path.display())),
                }
            }
        }
    }
    let newest = advisories.iter().map(|a| a.modified.clone()).max().unwrap_or_default();
    Ok((advisories, newest, unreadable))
}

/// How old the data is, in days, from its date (RFC 3339) to `now` (Unix seconds); `None` when
/// the date cannot be read.
pub fn age_days(date: &str, now: i64) -> Option<f64> {
    let at: jiff::Timestamp = date.parse().ok()?;
    Some((now - at.as_second()) as f64 / 86_400.0)
}

/// The package URL of a locked package.
pub fn purl(package: &Package) -> String {
    let kind = match package.ecosystem {
        "crates.io" => "cargo",
        "npm" => "npm",
        "PyPI" => "pypi",
        "Debian" => "deb/debian",
        "Alpine" => "apk/alpine",
        _ => "golang",
    };
    format!("pkg:{kind}/{}@{}", package.name, package.version)
}

/// What an SBOM describes: a release (`application`) or an image (`container`).
pub struct Subject<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub version: &'a str,
}

/// A CycloneDX 1.5 SBOM of `packages`, for `subject`, made at `timestamp` (RFC 3339) by Tandem
/// `tool_version`.
pub fn cyclonedx(subject: &Subject, packages: &[Package], timestamp: &str, tool_version: &str) -> serde_json::Value {
    let components: Vec<serde_json::Value> = packages
        .iter()
        .map(|p| serde_json::json!({"type": "library", "name": p.name, "version": p.version, "purl": purl(p), "bom-ref": purl(p)}))
        .collect();
    serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": timestamp,
            "tools": {"components": [{"type": "application", "name": "tandem", "version": tool_version}]},
            "component": {
                "type": subject.kind, "name": subject.name, "version": subject.version,
                "bom-ref": format!("{}@{}", subject.name, subject.version),
            },
        },
        "components": components,
    })
}
