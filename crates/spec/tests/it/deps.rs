//! Dependency scanning: the four lock formats, OSV records (written for the test in OSV's schema:
//! the real export cannot be fetched here), ranges, explicit versions, and version order.

use std::cmp::Ordering;

use spec::deps::{self, advisory, compare, packages};

const CARGO_LOCK: &str = r#"
version = 3

[[package]]
name = "time"
version = "0.1.44"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "smallvec"
version = "1.6.1"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "my-app"
version = "0.1.0"
"#;

const PACKAGE_LOCK: &str = r#"{"name": "web", "lockfileVersion": 3, "packages": {
  "": {"name": "web", "version": "1.0.0"},
  "node_modules/lodash": {"version": "4.17.20"},
  "node_modules/express/node_modules/qs": {"version": "6.5.2"},
  "node_modules/left-pad": {"version": "1.3.0"}
}}"#;

const REQUIREMENTS: &str = "# pinned\nJinja2==2.11.2\nrequests[socks]==2.31.0 ; python_version >= '3.8'\nflask>=2\n";

const GO_SUM: &str =
    "golang.org/x/text v0.3.5 h1:abc=\ngolang.org/x/text v0.3.5/go.mod h1:def=\ngithub.com/pkg/errors v0.9.1 h1:ghi=\n";

fn record(id: &str, ecosystem: &str, name: &str, events: &str, extra: &str) -> String {
    format!(
        r#"{{"schema_version": "1.6.0", "id": "{id}", "modified": "2026-11-20T10:00:00Z", "summary": "{id} in {name}", {extra}
        "affected": [{{"package": {{"ecosystem": "{ecosystem}", "name": "{name}"}}, "ranges": [{{"type": "SEMVER", "events": {events}}}]}}]}}"#
    )
}

#[test]
fn lock_files_of_four_ecosystems_are_read() {
    let cargo = packages("Cargo.lock", CARGO_LOCK).unwrap();
    assert_eq!(
        cargo.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["smallvec", "time"],
        "path dependencies have no advisories"
    );
    let npm = packages("web/package-lock.json", PACKAGE_LOCK).unwrap();
    assert_eq!(
        npm.iter().map(|p| format!("{}@{}", p.name, p.version)).collect::<Vec<_>>(),
        ["left-pad@1.3.0", "lodash@4.17.20", "qs@6.5.2"]
    );
    let pypi = packages("requirements.txt", REQUIREMENTS).unwrap();
    assert_eq!(
        pypi.iter().map(|p| format!("{}=={}", p.name, p.version)).collect::<Vec<_>>(),
        ["jinja2==2.11.2", "requests==2.31.0"]
    );
    let go = packages("go.sum", GO_SUM).unwrap();
    assert_eq!(go.len(), 2);
    assert!(packages("Gemfile.lock", "").unwrap_err().contains("not a lock file"));
    assert!(packages("Cargo.lock", "[[package]\n").is_err());
}

#[test]
fn advisories_match_their_ranges_and_versions() {
    let records = [
        record(
            "RUSTSEC-2020-0071",
            "crates.io",
            "time",
            r#"[{"introduced": "0"}, {"fixed": "0.2.23"}]"#,
            r#""database_specific": {"severity": "moderate"},"#,
        ),
        record("RUSTSEC-2021-0003", "crates.io", "smallvec", r#"[{"introduced": "1.6.0"}, {"fixed": "1.6.1"}]"#, ""),
        record(
            "GHSA-35jh-r3h4-6jhm",
            "npm",
            "lodash",
            r#"[{"introduced": "0"}, {"fixed": "4.17.21"}]"#,
            r#""database_specific": {"severity": "HIGH"},"#,
        ),
        record(
            "GHSA-hrpp-h998-j3pp",
            "npm",
            "qs",
            r#"[{"introduced": "6.5.0"}, {"last_affected": "6.5.2"}]"#,
            r#""severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],"#,
        ),
        record("PYSEC-2021-66", "PyPI", "Jinja2", r#"[{"introduced": "0"}, {"fixed": "2.11.3"}]"#, ""),
        record("GO-2021-0113", "Go", "golang.org/x/text", r#"[{"introduced": "0"}, {"fixed": "0.3.7"}]"#, ""),
    ];
    let advisories: Vec<_> = records.iter().map(|r| advisory(r).unwrap()).collect();
    let mut all = packages("Cargo.lock", CARGO_LOCK).unwrap();
    all.extend(packages("package-lock.json", PACKAGE_LOCK).unwrap());
    all.extend(packages("requirements.txt", REQUIREMENTS).unwrap());
    all.extend(packages("go.sum", GO_SUM).unwrap());
    let findings = deps::scan(&all, &advisories);
    let found: Vec<(String, &str, &str)> =
        findings.iter().map(|f| (f.package.name.clone(), f.advisory.as_str(), f.severity.as_str())).collect();
    assert_eq!(
        found,
        [
            ("time".to_string(), "RUSTSEC-2020-0071", "moderate"),
            ("lodash".to_string(), "GHSA-35jh-r3h4-6jhm", "high"),
            ("qs".to_string(), "GHSA-hrpp-h998-j3pp", "critical"),
            ("jinja2".to_string(), "PYSEC-2021-66", "unknown"),
            ("golang.org/x/text".to_string(), "GO-2021-0113", "unknown"),
        ],
        "smallvec 1.6.1 is the fixed version; left-pad, requests and pkg/errors have no advisory"
    );
    // An explicit version list matches exactly.
    let listed = advisory(
        r#"{"id": "X-1", "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"}, "versions": ["1.3.0"]}]}"#,
    )
    .unwrap();
    assert_eq!(deps::scan(&all, &[listed]).len(), 1);
    assert!(advisory("{}").unwrap_err().contains("without `id`"));
}

#[test]
fn versions_order_as_their_ecosystems_do_closely_enough() {
    for (a, b, order) in [
        ("1.2.3", "1.2.10", Ordering::Less),
        ("1.2", "1.2.0", Ordering::Equal),
        ("1.0.0-alpha", "1.0.0", Ordering::Less),
        ("1.0.0-alpha", "1.0.0-beta", Ordering::Less),
        ("2.0rc1", "2.0", Ordering::Less),
        ("v0.3.7", "0.3.5", Ordering::Greater),
        ("1.0.0+build", "1.0.0", Ordering::Equal),
    ] {
        assert_eq!(compare(a, b), order, "{a} vs {b}");
    }
    let now = "2026-12-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second();
    assert_eq!(deps::age_days("2026-11-20T00:00:00Z", now).map(|d| d.round()), Some(11.0));
}

#[test]
fn os_package_databases_of_an_image_are_read() {
    let dpkg = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n continued line\n\nPackage: removed-one\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13.dfsg-1\n";
    let found = deps::packages("var/lib/dpkg/status", dpkg).unwrap();
    let purls: Vec<String> = found.iter().map(deps::purl).collect();
    assert_eq!(purls, ["pkg:deb/debian/libc6@2.36-9+deb12u4", "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1"]);
    assert!(found.iter().all(|p| p.ecosystem == "Debian"));
    let apk = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\n";
    let found = deps::packages("/lib/apk/db/installed", apk).unwrap();
    let purls: Vec<String> = found.iter().map(deps::purl).collect();
    assert_eq!(purls, ["pkg:apk/alpine/busybox@1.36.1-r5", "pkg:apk/alpine/musl@1.2.4-r2"]);
    // A file merely named `status` elsewhere is no package database.
    assert!(deps::packages("app/status", "Package: x\nVersion: 1\n").is_err());
}
