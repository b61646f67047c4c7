//! HEAD's commit read from the repository's files, as `git log -1 --name-only HEAD` would show
//! it, so that a run starts one process fewer. Only the plain case is read: a `.git` directory,
//! loose objects, a branch or a detached HEAD, at most one parent, and changes that cannot be a
//! rename. Anything else — packed objects, merges, a shallow clone, replacements, unusual paths,
//! settings it does not follow — leaves the question to git ([`head_commit`] says `None`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What `git log -1` says about HEAD's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadCommit {
    pub sha: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    /// The branch HEAD is on; `None` when HEAD is detached.
    pub branch: Option<String>,
    pub message: String,
    /// The files the commit changed (`--name-only`), in no particular order.
    pub changed: Vec<String>,
}

/// A commit object's fields that [`HeadCommit`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub tree: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub message: String,
}

/// One entry of a tree object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: String,
    pub sha: String,
}

/// Variables with which git would look elsewhere than `<root>/.git`, or see other objects.
const REDIRECTING: [&str; 8] = [
    "GIT_DIR",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_REPLACE_REF_BASE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_GRAFT_FILE",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
];

/// HEAD's commit in the repository at `root`, or `None` where git should answer (see the module).
pub fn head_commit(root: &Path) -> Option<HeadCommit> {
    if REDIRECTING.iter().any(|name| std::env::var_os(name).is_some()) {
        return None;
    }
    let git_dir = root.join(".git");
    // A grafted history, replaced objects or another repository format change what git shows.
    let config = std::fs::read_to_string(git_dir.join("config")).ok()?;
    if config.to_ascii_lowercase().contains("[extensions") {
        return None;
    }
    for path in ["shallow", "info/grafts", "refs/replace", "commondir"] {
        if std::fs::symlink_metadata(git_dir.join(path)).is_ok() {
            return None;
        }
    }
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.strip_suffix('\n').unwrap_or(&head);
    let (sha, branch) = match head.strip_prefix("ref: ") {
        Some(target) => {
            let branch = target.strip_prefix("refs/heads/")?;
            (resolve_ref(&git_dir, target)?, Some(branch.to_string()))
        }
        None if is_sha(head) => (head.to_string(), None),
        None => return None,
    };
    let commit = parse_commit(&read_object(&git_dir, &sha, "commit")?)?;
    // A first commit shows every file, unless a setting says otherwise; a merge is left to git.
    let parent_tree = match commit.parents.as_slice() {
        [] if shows_root(&config) => None,
        [parent] => Some(parse_commit(&read_object(&git_dir, parent, "commit")?)?.tree),
        _ => return None,
    };
    let mut changes = Changes::default();
    diff_trees(&git_dir, parent_tree.as_deref(), Some(&commit.tree), "", &mut changes)?;
    // A file removed and another added may be a rename, which git shows by its new name only.
    if !changes.added.is_empty() && !changes.deleted.is_empty() {
        return None;
    }
    let mut changed = changes.added;
    changed.extend(changes.deleted);
    changed.extend(changes.modified);
    Some(HeadCommit {
        sha,
        parents: commit.parents,
        author_name: commit.author_name,
        author_email: commit.author_email,
        branch,
        message: commit.message,
        changed,
    })
}

/// Whether `git log` shows a first commit's files, as it does unless `log.showRoot` says not
/// to: `false` when any configuration git reads names that setting, includes another file, or
/// is not where this looks (variables that name other files).
fn shows_root(repo_config: &str) -> bool {
    if ["GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
    {
        return false;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let xdg =
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".config")));
    let files = [
        Some(PathBuf::from("/etc/gitconfig")),
        Some(PathBuf::from("/usr/local/etc/gitconfig")),
        xdg.map(|dir| dir.join("git/config")),
        home.map(|dir| dir.join(".gitconfig")),
    ];
    let silent = |text: &str| {
        let text = text.to_ascii_lowercase();
        !text.contains("showroot") && !text.contains("[include")
    };
    silent(repo_config)
        && files.into_iter().flatten().all(|path| match std::fs::read_to_string(&path) {
            Ok(text) => silent(&text),
            Err(error) => error.kind() == std::io::ErrorKind::NotFound,
        })
}

fn is_sha(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The commit a branch's loose ref file or its `packed-refs` line names.
fn resolve_ref(git_dir: &Path, name: &str) -> Option<String> {
    if name.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return None;
    }
    match std::fs::read_to_string(git_dir.join(name)) {
        Ok(text) => {
            let sha = text.strip_suffix('\n').unwrap_or(&text);
            is_sha(sha).then(|| sha.to_string())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let packed = std::fs::read_to_string(git_dir.join("packed-refs")).ok()?;
            packed.lines().find_map(|line| {
                let (sha, refname) = line.split_once(' ')?;
                (refname == name && is_sha(sha)).then(|| sha.to_string())
            })
        }
        Err(_) => None,
    }
}

/// The contents of the loose object `sha`, when it is one of `kind`.
fn read_object(git_dir: &Path, sha: &str, kind: &str) -> Option<Vec<u8>> {
    if !is_sha(sha) {
        return None;
    }
    let path: PathBuf = git_dir.join("objects").join(&sha[..2]).join(&sha[2..]);
    let compressed = std::fs::read(path).ok()?;
    let mut inflated = Vec::with_capacity(compressed.len() * 3);
    flate2::read::ZlibDecoder::new(compressed.as_slice()).read_to_end(&mut inflated).ok()?;
    let nul = inflated.iter().position(|&b| b == 0)?;
    let header = std::str::from_utf8(&inflated[..nul]).ok()?;
    let (found, size) = header.split_once(' ')?;
    if found != kind || size.parse::<usize>().ok()? != inflated.len() - nul - 1 {
        return None;
    }
    inflated.drain(..=nul);
    Some(inflated)
}

/// A commit object's tree, parents, author and message; `None` for anything git would show
/// differently than it is written (another encoding) or that is not a commit.
pub fn parse_commit(bytes: &[u8]) -> Option<Commit> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (headers, message) = text.split_once("\n\n").unwrap_or((text.strip_suffix('\n').unwrap_or(text), ""));
    let mut tree = None;
    let mut parents = Vec::new();
    let mut author = None;
    for line in headers.lines() {
        // Continuation lines (a signature's) belong to the header before them.
        if line.starts_with(' ') {
            continue;
        }
        let (key, value) = line.split_once(' ')?;
        match key {
            "tree" if is_sha(value) && tree.is_none() => tree = Some(value.to_string()),
            "parent" if is_sha(value) => parents.push(value.to_string()),
            "author" if author.is_none() => author = Some(value),
            "encoding" | "tree" | "parent" | "author" => return None,
            _ => {}
        }
    }
    let author = author?;
    let open = author.find('<')?;
    let close = open + author[open..].find('>')?;
    Some(Commit {
        tree: tree?,
        parents,
        author_name: author[..open].trim().to_string(),
        author_email: author[open + 1..close].to_string(),
        message: message.to_string(),
    })
}

/// A tree object's entries by name; `None` for a malformed tree or a name git would quote.
pub fn parse_tree(mut bytes: &[u8]) -> Option<BTreeMap<String, TreeEntry>> {
    let mut entries = BTreeMap::new();
    while !bytes.is_empty() {
        let space = bytes.iter().position(|&b| b == b' ')?;
        let mode = std::str::from_utf8(&bytes[..space]).ok()?;
        if mode.is_empty() || !mode.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let rest = &bytes[space + 1..];
        let nul = rest.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&rest[..nul]).ok()?;
        if name.is_empty() || name.contains('/') || name.bytes().any(needs_quoting) {
            return None;
        }
        let id = rest.get(nul + 1..nul + 21)?;
        let sha = hex::encode(id);
        entries.insert(name.to_string(), TreeEntry { mode: mode.to_string(), sha });
        bytes = &rest[nul + 21..];
    }
    Some(entries)
}

/// Bytes `git log` writes quoted in a path (with `core.quotePath`, its default).
fn needs_quoting(byte: u8) -> bool {
    !(0x20..0x7f).contains(&byte) || byte == b'"' || byte == b'\\'
}

#[derive(Default)]
struct Changes {
    added: Vec<String>,
    deleted: Vec<String>,
    modified: Vec<String>,
}

fn is_tree(entry: &TreeEntry) -> bool {
    entry.mode == "40000"
}

/// The files that differ between two trees (`None` for a missing side), under `prefix`.
fn diff_trees(git_dir: &Path, old: Option<&str>, new: Option<&str>, prefix: &str, changes: &mut Changes) -> Option<()> {
    if old == new {
        return Some(());
    }
    let read = |sha: Option<&str>| match sha {
        Some(sha) => parse_tree(&read_object(git_dir, sha, "tree")?),
        None => Some(BTreeMap::new()),
    };
    let (old, new) = (read(old)?, read(new)?);
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let path = format!("{prefix}{name}");
        match (old.get(name), new.get(name)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) if is_tree(a) && is_tree(b) => {
                diff_trees(git_dir, Some(&a.sha), Some(&b.sha), &format!("{path}/"), changes)?;
            }
            // A file that became a folder, or the reverse: removed and added.
            (Some(a), Some(b)) if is_tree(a) || is_tree(b) => return None,
            (Some(_), Some(_)) => changes.modified.push(path),
            (None, Some(b)) if is_tree(b) => diff_trees(git_dir, None, Some(&b.sha), &format!("{path}/"), changes)?,
            (None, Some(_)) => changes.added.push(path),
            (Some(a), None) if is_tree(a) => diff_trees(git_dir, Some(&a.sha), None, &format!("{path}/"), changes)?,
            (Some(_), None) => changes.deleted.push(path),
            (None, None) => {}
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_commit_is_read_and_an_encoded_one_is_left_to_git() {
        let tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let parent = "1111111111111111111111111111111111111111";
        let signed = format!(
            "tree {tree}\nparent {parent}\nauthor Ann Lee <ann@example.com> 1700000000 +0100\n\
             committer Ann Lee <ann@example.com> 1700000000 +0100\ngpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n \
             -----END PGP SIGNATURE-----\n\nFix the probe\n\nIt timed out.\n"
        );
        let commit = parse_commit(signed.as_bytes()).unwrap();
        assert_eq!(commit.tree, tree);
        assert_eq!(commit.parents, vec![parent.to_string()]);
        assert_eq!((commit.author_name.as_str(), commit.author_email.as_str()), ("Ann Lee", "ann@example.com"));
        assert_eq!(commit.message, "Fix the probe\n\nIt timed out.\n");
        let encoded = signed.replace("gpgsig", "encoding ISO-8859-1\ngpgsig");
        assert_eq!(parse_commit(encoded.as_bytes()), None);
        assert_eq!(parse_commit(b"tree x\n\nmessage"), None);
        assert_eq!(parse_commit(format!("tree {tree}\nauthor nobody\n\nm").as_bytes()), None);
    }

    #[test]
    fn a_tree_with_a_name_git_would_quote_is_left_to_git() {
        let entry = |mode: &str, name: &[u8]| {
            let mut bytes = format!("{mode} ").into_bytes();
            bytes.extend_from_slice(name);
            bytes.push(0);
            bytes.extend_from_slice(&[0xab; 20]);
            bytes
        };
        let mut tree = entry("100644", b"README.md");
        tree.extend(entry("40000", b"src"));
        let entries = parse_tree(&tree).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries["src"].mode, "40000");
        assert_eq!(entries["README.md"].sha, "ab".repeat(20));
        assert_eq!(parse_tree(&entry("100644", "é".as_bytes())), None);
        assert_eq!(parse_tree(&entry("100644", b"a\"b")), None);
        assert_eq!(parse_tree(&tree[..tree.len() - 3]), None, "a cut-off tree is malformed");
    }

    /// Every cut of a real-looking commit and tree, and many with bytes flipped, parse or are
    /// refused; none panics.
    #[test]
    fn damaged_objects_are_refused_without_a_panic() {
        let commit =
            b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nparent 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
            author A <a@b> 1 +0000\ncommitter A <a@b> 1 +0000\n\nm\n"
                .to_vec();
        let mut tree = b"100644 a\0".to_vec();
        tree.extend_from_slice(&[7; 20]);
        tree.extend_from_slice(b"40000 dir\0");
        tree.extend_from_slice(&[9; 20]);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for object in [&commit, &tree] {
            for cut in 0..object.len() {
                let _ = (parse_commit(&object[..cut]), parse_tree(&object[..cut]));
            }
            for _ in 0..5_000 {
                let mut damaged = object.clone();
                for _ in 0..1 + random() % 3 {
                    let at = (random() % damaged.len() as u64) as usize;
                    damaged[at] = random() as u8;
                }
                let _ = (parse_commit(&damaged), parse_tree(&damaged));
            }
        }
        assert!(parse_commit(&commit).is_some() && parse_tree(&tree).is_some());
    }
}
