//! Remote actions: fetched with git from an ordered list of sources (a forge's base URL, or a
//! directory of repositories for machines without internet), resolved to a commit, and kept by
//! commit in the data directory, so that a run after the first reads them from disk.
//!
//! Layout under `<data>/actions/`: `git/<owner>/<repo>.git` (a bare repository holding what was
//! fetched), `trees/<owner>/<repo>/<commit>/` (the files at that commit, written once, complete or
//! absent) and `refs/<owner>/<repo>/<ref>` (the commit a ref last resolved to, for offline runs).

use std::path::{Path, PathBuf};
use std::process::Command;

static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The action source used when none is configured.
pub const DEFAULT_SOURCE: &str = "https://github.com";

/// An action at a commit, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The repository's files at `commit`.
    pub root: PathBuf,
    pub commit: String,
    /// The source it came from, or `cache` when it was on disk already.
    pub source: String,
    /// Said once to the person: e.g. that the sources could not be reached and a cached
    /// resolution was used.
    pub warning: Option<String>,
}

/// Where actions come from, in order.
#[derive(Debug, Clone)]
pub struct ActionSources {
    pub sources: Vec<String>,
    /// `<data>/actions`.
    pub cache: PathBuf,
}

/// Where a repository asks for its actions: `.tandem/action-sources` at the run's commit (the
/// working tree's for `--worktree` runs), one URL or absolute directory per line, `#` comments.
/// These are tried before the server's or the command line's.
pub async fn repository_sources(root: &Path, sha: &str, worktree: bool) -> Vec<String> {
    const FILE: &str = ".tandem/action-sources";
    let text = if worktree || sha.is_empty() {
        std::fs::read_to_string(root.join(FILE)).unwrap_or_default()
    } else {
        git::repo::git(root, &["show", &format!("{sha}:{FILE}")]).await.unwrap_or_default()
    };
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| l.contains("://") || l.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// Whether `text` is a full commit id (40 hex digits, or 64 for SHA-256 repositories).
pub fn is_full_sha(text: &str) -> bool {
    (text.len() == 40 || text.len() == 64) && text.chars().all(|c| c.is_ascii_hexdigit())
}

impl ActionSources {
    pub fn new(data_dir: &Path, sources: Vec<String>) -> ActionSources {
        let sources = if sources.is_empty() { vec![DEFAULT_SOURCE.to_string()] } else { sources };
        ActionSources { sources, cache: data_dir.join("actions") }
    }

    /// The git address of `owner/repo` at `source`: below a URL, or a repository in a directory
    /// (`owner/repo.git`, `owner/repo`, or a bundle `owner__repo.bundle`).
    fn address(source: &str, owner: &str, repo: &str) -> Option<String> {
        if source.contains("://") || source.starts_with("git@") {
            return Some(format!("{}/{owner}/{repo}", source.trim_end_matches('/')));
        }
        let dir = Path::new(source);
        [
            dir.join(owner).join(format!("{repo}.git")),
            dir.join(owner).join(repo),
            dir.join(format!("{owner}__{repo}.bundle")),
        ]
        .into_iter()
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
    }

    /// The files of `owner/repo` at `git_ref`. A full commit id already on disk is read without
    /// asking any source; any other ref is resolved again at each call (a tag may move), falling
    /// back to the last resolution when no source answers.
    pub fn fetch(&self, owner: &str, repo: &str, git_ref: &str) -> Result<Fetched, String> {
        let trees = self.cache.join("trees").join(owner).join(repo);
        let full = is_full_sha(git_ref);
        if full && trees.join(git_ref.to_ascii_lowercase()).is_dir() {
            let commit = git_ref.to_ascii_lowercase();
            return Ok(Fetched { root: trees.join(&commit), commit, source: "cache".into(), warning: None });
        }
        // One fetch at a time in this process: jobs of a run often need the same action.
        let _one_at_a_time = FETCHING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if full && trees.join(git_ref.to_ascii_lowercase()).is_dir() {
            let commit = git_ref.to_ascii_lowercase();
            return Ok(Fetched { root: trees.join(&commit), commit, source: "cache".into(), warning: None });
        }
        let bare = self.cache.join("git").join(owner).join(format!("{repo}.git"));
        if !bare.join("HEAD").exists() {
            std::fs::create_dir_all(&bare).map_err(|e| format!("cannot create {}: {e}", bare.display()))?;
            git(&bare, &["-c", "init.defaultBranch=main", "init", "--quiet", "--bare"])?;
        }
        let mut tried = Vec::new();
        for source in &self.sources {
            let Some(address) = Self::address(source, owner, repo) else {
                tried.push(format!("{source}: no repository {owner}/{repo} there"));
                continue;
            };
            match self.fetch_from(&bare, &address, git_ref) {
                Ok(commit) => {
                    if full && !commit.eq_ignore_ascii_case(git_ref) {
                        return Err(format!(
                            "{owner}/{repo}@{git_ref}: {source} gave commit {commit}, not the commit the workflow names"
                        ));
                    }
                    let root = self.extract(&bare, &trees, &commit)?;
                    if !full {
                        self.remember(owner, repo, git_ref, &commit);
                    }
                    return Ok(Fetched { root, commit, source: source.clone(), warning: None });
                }
                Err(error) => tried.push(format!("{source}: {error}")),
            }
        }
        // Offline: the commit this ref resolved to last time, when its files are still here.
        let remembered = self.cache.join("refs").join(owner).join(repo).join(ref_file(git_ref));
        if let Ok(commit) = std::fs::read_to_string(&remembered) {
            let commit = commit.trim().to_string();
            if trees.join(&commit).is_dir() {
                let warning = format!(
                    "no action source answered for {owner}/{repo}@{git_ref} ({}); using commit {} that it resolved to before",
                    tried.join("; "),
                    &commit[..commit.len().min(12)]
                );
                return Ok(Fetched {
                    root: trees.join(&commit),
                    commit,
                    source: "cache".into(),
                    warning: Some(warning),
                });
            }
        }
        Err(format!(
            "cannot fetch the action {owner}/{repo}@{git_ref}; tried {}:\n  {}\nhint: `tandem actions pull` fetches a repository's actions ahead of time, and `--action-source` adds a source (a forge's URL or a directory of repositories)",
            self.sources.len(),
            tried.join("\n  ")
        ))
    }

    /// Fetches `git_ref` from `address` into the bare repository; the commit it names.
    fn fetch_from(&self, bare: &Path, address: &str, git_ref: &str) -> Result<String, String> {
        let spec = if is_full_sha(git_ref) { git_ref.to_string() } else { resolve_name(bare, address, git_ref)? };
        git(bare, &["fetch", "--quiet", "--no-tags", "--depth=1", "--end-of-options", address, &spec])?;
        let commit = git(bare, &["rev-parse", "FETCH_HEAD^{commit}"])?;
        Ok(commit.trim().to_string())
    }

    /// Writes the files of `commit` below `trees/<commit>` once: into a temporary folder first,
    /// renamed into place when complete.
    fn extract(&self, bare: &Path, trees: &Path, commit: &str) -> Result<PathBuf, String> {
        let target = trees.join(commit);
        if target.is_dir() {
            return Ok(target);
        }
        std::fs::create_dir_all(trees).map_err(|e| format!("cannot create {}: {e}", trees.display()))?;
        let partial = trees.join(format!(".{commit}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let output = Command::new("git")
            .arg("-C")
            .arg(bare)
            .args(["archive", "--format=tar", commit])
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!("git archive {commit}: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        if let Err(error) = tar::Archive::new(output.stdout.as_slice()).unpack(&partial) {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!("cannot unpack the action at {commit}: {error}"));
        }
        match std::fs::rename(&partial, &target) {
            Ok(()) => Ok(target),
            // Another run wrote it meanwhile: theirs is as good.
            Err(_) if target.is_dir() => {
                let _ = std::fs::remove_dir_all(&partial);
                Ok(target)
            }
            Err(error) => Err(format!("cannot write {}: {error}", target.display())),
        }
    }

    fn remember(&self, owner: &str, repo: &str, git_ref: &str, commit: &str) {
        let dir = self.cache.join("refs").join(owner).join(repo);
        if std::fs::create_dir_all(&dir).is_ok() {
            let path = dir.join(ref_file(git_ref));
            let temp = dir.join(format!(".{}.{}", ref_file(git_ref), std::process::id()));
            if std::fs::write(&temp, commit).is_ok() {
                let _ = std::fs::rename(&temp, &path);
            }
        }
    }

    /// Every cached action: (`owner/repo`, commit, the refs that resolved to it).
    pub fn list(&self) -> Vec<(String, String, Vec<String>)> {
        let mut found = Vec::new();
        let trees = self.cache.join("trees");
        for owner in read_dir_names(&trees) {
            for repo in read_dir_names(&trees.join(&owner)) {
                let refs_dir = self.cache.join("refs").join(&owner).join(&repo);
                let refs: Vec<(String, String)> = read_dir_names(&refs_dir)
                    .into_iter()
                    .filter_map(|name| {
                        let commit = std::fs::read_to_string(refs_dir.join(&name)).ok()?;
                        Some((name.replace("%2F", "/"), commit.trim().to_string()))
                    })
                    .collect();
                for commit in
                    read_dir_names(&trees.join(&owner).join(&repo)).into_iter().filter(|c| !c.starts_with('.'))
                {
                    let names = refs.iter().filter(|(_, c)| *c == commit).map(|(r, _)| r.clone()).collect();
                    found.push((format!("{owner}/{repo}"), commit, names));
                }
            }
        }
        found.sort();
        found
    }
}

/// A ref as a file name: `/` in branch names would make folders.
fn ref_file(git_ref: &str) -> String {
    git_ref.replace('/', "%2F")
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// The full ref a short name stands for at `address`, preferring a tag to a branch as git does.
fn resolve_name(bare: &Path, address: &str, name: &str) -> Result<String, String> {
    if name.starts_with("refs/") {
        return Ok(name.to_string());
    }
    let listed = git(bare, &["ls-remote", "--tags", "--heads", "--end-of-options", address, name])?;
    let refs: Vec<&str> = listed.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    let tag = format!("refs/tags/{name}");
    let head = format!("refs/heads/{name}");
    if refs.contains(&tag.as_str()) {
        Ok(tag)
    } else if refs.contains(&head.as_str()) {
        Ok(head)
    } else {
        Err(format!("no tag or branch `{name}`"))
    }
}

/// Runs git in `dir`; its standard output, or its standard error as the error.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("git failed").trim();
        Err(last.trim_start_matches("fatal: ").to_string())
    }
}
