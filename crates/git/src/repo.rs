//! Every git command Tandem runs goes through [`run`]: no credential prompt, a timeout, killed
//! when it is over. On top: facts about a repository, clean and working-tree checkouts, ref
//! resolution, and bare mirrors.

use std::path::{Path, PathBuf};

use tokio::process::Command;

/// Why a git operation failed, with what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0} (is git installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("git {command} did not finish within {minutes} minutes")]
    Timeout { command: String, minutes: u64 },
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("ref `{0}` does not exist in the repository")]
    UnknownRef(String),
    #[error("cannot clone {url}: {error}")]
    Clone { url: String, error: Box<GitError> },
    #[error(
        "{error}\n  hint: `tandem run` runs the commit at HEAD; make a first commit, or run from inside a git repository"
    )]
    NoCommit { error: Box<GitError> },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
}

/// For callers whose errors are messages for people.
impl From<GitError> for String {
    fn from(error: GitError) -> String {
        error.to_string()
    }
}

/// What a run needs to know about the repository it runs for.
#[derive(Debug, Clone, Default)]
pub struct RepoFacts {
    pub root: PathBuf,
    pub sha: String,
    /// `refs/heads/<branch>`, or the sha for a detached HEAD.
    pub git_ref: String,
    pub branch: Option<String>,
    /// `owner/name`, from the `origin` remote when it looks like a forge URL, else `local/<dir>`.
    pub repository: String,
    pub actor: String,
    pub commit_message: String,
    pub author_name: String,
    pub author_email: String,
    pub before: String,
    /// Files changed by HEAD (and, for working-tree runs, uncommitted changes).
    pub changed_paths: Vec<String>,
}

/// The longest any git command may take: a clone or fetch of a large repository over a slow
/// link fits; a hung remote or a stuck lock does not hold a run or the server forever.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Runs `git args…` (in `dir`, when given) and returns its standard output without trailing
/// whitespace. Git never prompts for credentials here (a prompt would hang a server); a command
/// still running after [`TIMEOUT`] is killed and reported.
pub async fn run(dir: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
    run_env(dir, args, &[]).await
}

/// [`run`] with variables added to git's environment: how credentials reach git without being
/// arguments (which any user of the machine can list) or files (`GIT_CONFIG_COUNT` and its pairs).
pub async fn run_env(dir: Option<&Path>, args: &[&str], env: &[(String, String)]) -> Result<String, GitError> {
    let mut command = Command::new("git");
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    command.args(args).env("GIT_TERMINAL_PROMPT", "0").kill_on_drop(true);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let output = match tokio::time::timeout(TIMEOUT, command.output()).await {
        Ok(output) => output.map_err(GitError::Spawn)?,
        Err(_) => {
            let command = crate::redact_credentials(&args.join(" "));
            return Err(GitError::Timeout { command, minutes: TIMEOUT.as_secs() / 60 });
        }
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_string())
    } else {
        // What git says is shown and recorded: credentials in URLs do not go with it.
        let stderr = crate::redact_credentials(String::from_utf8_lossy(&output.stderr).trim());
        Err(GitError::Failed { command: crate::redact_credentials(&args.join(" ")), stderr })
    }
}

/// Merges `theirs` into `ours` without a work tree (`git merge-tree --write-tree`, their merge
/// base found by git): `Ok(tree)`, or `Err(files)` that conflict.
pub async fn merge_tree(repo: &Path, ours: &str, theirs: &str) -> Result<Result<String, Vec<String>>, GitError> {
    let args = ["merge-tree", "--write-tree", "--name-only", "--no-messages", "--end-of-options", ours, theirs];
    let mut command = Command::new("git");
    command.arg("-C").arg(repo).args(args).env("GIT_TERMINAL_PROMPT", "0").kill_on_drop(true);
    let output = match tokio::time::timeout(TIMEOUT, command.output()).await {
        Ok(output) => output.map_err(GitError::Spawn)?,
        Err(_) => return Err(GitError::Timeout { command: args.join(" "), minutes: TIMEOUT.as_secs() / 60 }),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let tree = lines.next().unwrap_or_default().trim().to_string();
    match output.status.code() {
        Some(0) => Ok(Ok(tree)),
        Some(1) => {
            let mut files: Vec<String> = lines.map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
            files.dedup();
            Ok(Err(files))
        }
        _ => Err(GitError::Failed {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }),
    }
}

/// [`run`] in the repository at `dir`.
pub async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    run(Some(dir), args).await
}

/// The commit `name` (a branch, tag or commit) names in the repository at `repo`.
pub async fn resolve_ref(repo: &Path, name: &str) -> Result<String, GitError> {
    match git(repo, &["rev-parse", "--verify", "--quiet", "--end-of-options", &format!("{name}^{{commit}}")]).await {
        Ok(sha) => Ok(sha.trim().to_string()),
        Err(GitError::Failed { .. }) => Err(GitError::UnknownRef(name.to_string())),
        Err(other) => Err(other),
    }
}

/// A bare mirror of `source` at `mirror`, cloned when it does not exist yet (with `env` as in
/// [`run_env`]).
pub async fn ensure_mirror(source: &str, mirror: &Path, env: &[(String, String)]) -> Result<(), GitError> {
    if mirror.join("HEAD").exists() {
        return Ok(());
    }
    let parent = mirror.parent().unwrap_or(mirror);
    tokio::fs::create_dir_all(parent).await.map_err(|error| GitError::Io { path: parent.to_path_buf(), error })?;
    run_env(None, &["clone", "--quiet", "--bare", "--end-of-options", source, &mirror.to_string_lossy()], env)
        .await
        .map(|_| ())
        .map_err(|e| GitError::Clone { url: crate::redact_credentials(source), error: Box::new(e) })
}

/// Reads the facts of the repository at `root`. `worktree` adds uncommitted changes to the changed paths.
pub async fn repo_facts(root: impl AsRef<Path>, worktree: bool) -> Result<RepoFacts, GitError> {
    let root = root.as_ref();
    // Independent questions, asked at once, and as few as possible: each git call costs a
    // process start. The commit's changed files come with its log entry; the commit and the
    // remote's URL are read from the repository's files when they can be.
    let (log, remote, status) = tokio::join!(
        async {
            // HEAD's commit is read from the repository's files where it can be; git reads the rest.
            match crate::objects::head_commit(root) {
                Some(commit) => Ok(commit),
                None => head_commit(root).await,
            }
        },
        async {
            match crate::config::remote_url(root, "origin") {
                Some(url) => url.ok_or(()),
                None => git(root, &["config", "--get", "remote.origin.url"]).await.map_err(drop),
            }
        },
        async {
            if worktree { git(root, &["status", "--porcelain", "--untracked-files=all"]).await.ok() } else { None }
        },
    );
    let commit = log.map_err(|e| GitError::NoCommit { error: Box::new(e) })?;
    let crate::objects::HeadCommit { sha, parents, author_name, author_email, branch, message, changed } = commit;
    let before = parents.into_iter().next().unwrap_or_else(|| "0".repeat(40));
    let commit_message = message.trim().to_string();
    let git_ref = branch.as_ref().map_or_else(|| sha.clone(), |b| format!("refs/heads/{b}"));
    let dir_name = root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "repo".into());
    let repository = remote.ok().and_then(|url| owner_and_name(&url)).unwrap_or_else(|| format!("local/{dir_name}"));
    let mut changed_paths = changed;
    if let Some(status) = status {
        changed_paths.extend(
            status.lines().filter_map(|l| l.get(3..)).map(|p| p.rsplit(" -> ").next().unwrap_or(p).to_string()),
        );
    }
    changed_paths.sort();
    changed_paths.dedup();
    let actor = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| author_name.clone());
    Ok(RepoFacts {
        root: root.to_path_buf(),
        sha,
        git_ref,
        branch,
        repository,
        actor,
        commit_message,
        author_name,
        author_email,
        before,
        changed_paths,
    })
}

/// HEAD's commit as git shows it (`git log -1 --name-only`), which
/// [`crate::objects::head_commit`] reads without git where it can.
pub async fn head_commit(root: &Path) -> Result<crate::objects::HeadCommit, GitError> {
    let log =
        git(root, &["log", "-1", "--format=%H%x00%P%x00%an%x00%ae%x00%D%x00%B%x00", "--name-only", "HEAD"]).await?;
    let mut parts = log.splitn(7, '\0');
    let mut next = || parts.next().unwrap_or_default();
    let sha = next().to_string();
    let parents = next().split_whitespace().map(str::to_string).collect();
    let author_name = next().to_string();
    let author_email = next().to_string();
    // The branch comes from the decorations (`HEAD -> main`; a detached HEAD has no arrow).
    let branch = next().split(", ").find_map(|decoration| decoration.strip_prefix("HEAD -> ")).map(str::to_string);
    let message = next().to_string();
    let changed = next().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect();
    Ok(crate::objects::HeadCommit { sha, parents, author_name, author_email, branch, message, changed })
}

/// `owner/name` from a remote URL such as `git@host:owner/name.git` or `https://host/owner/name`.
pub fn owner_and_name(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let segments: Vec<&str> = trimmed.split(['/', ':']).filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [.., owner, name] if !owner.contains('.') && !owner.contains('@') => Some(format!("{owner}/{name}")),
        _ => None,
    }
}

/// Checks out `sha` of the repository at `repo` into `dest` (an empty or missing directory).
/// With `worktree`, the working tree's uncommitted state is laid over it, untracked files
/// included and ignored files left out.
pub async fn checkout(repo: &Path, sha: &str, dest: &Path, worktree: bool) -> Result<(), GitError> {
    let dest_str = dest.to_string_lossy().into_owned();
    let repo_str = repo.to_string_lossy().into_owned();
    if dest.join(".git").exists() {
        git(dest, &["fetch", "--quiet", "--end-of-options", &repo_str, sha]).await?;
    } else {
        run(None, &["clone", "--quiet", "--shared", "--no-checkout", "--end-of-options", &repo_str, &dest_str]).await?;
    }
    git(dest, &["checkout", "--quiet", "--force", "--detach", sha]).await?;
    if worktree {
        let files = git(repo, &["ls-files", "-z", "--cached", "--others", "--exclude-standard"]).await?;
        for relative in files.split('\0').filter(|f| !f.is_empty()) {
            let source = repo.join(relative);
            let target = dest.join(relative);
            match source.symlink_metadata() {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let link = std::fs::read_link(&source).map_err(io(&source))?;
                    // A file or link already there is replaced; none there is what we want.
                    let _ = std::fs::remove_file(&target);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                    std::os::unix::fs::symlink(link, &target).map_err(io(&target))?;
                }
                Ok(meta) if meta.is_file() => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                    std::fs::copy(&source, &target).map_err(io(&target))?;
                }
                Ok(_) => {}
                Err(_) => {
                    // Deleted in the working tree.
                    let _ = std::fs::remove_file(&target);
                }
            }
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitError + '_ {
    move |error| GitError::Io { path: path.to_path_buf(), error }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_name_from_urls() {
        assert_eq!(owner_and_name("git@github.com:tokio-rs/tokio.git").as_deref(), Some("tokio-rs/tokio"));
        assert_eq!(owner_and_name("https://gitea.example/org/app/").as_deref(), Some("org/app"));
    }
}
