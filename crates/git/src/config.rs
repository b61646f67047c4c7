//! Reads a value from a repository's own config file without starting git, for the questions
//! asked at every `tandem run`; anything this reader does not follow is left to git itself.

use std::path::Path;

/// The URL of remote `name` in the config file of the repository at `root`, read the way
/// `git config --get remote.<name>.url` reads that file: `Some(Some(url))` (the last one when
/// there are several), `Some(None)` when the file names none, and `None` when the answer is not
/// in that file alone (a worktree or submodule whose `.git` is a file, `[include]` or
/// `[includeIf]` sections, values continued over lines, anything malformed): ask git then.
///
/// Settings outside the repository (`~/.gitconfig`, `/etc/gitconfig`) are not read; a remote
/// named there is unheard of.
pub fn remote_url(root: &Path, name: &str) -> Option<Option<String>> {
    let git_dir = root.join(".git");
    if !git_dir.is_dir() {
        return None;
    }
    match std::fs::read_to_string(git_dir.join("config")) {
        Ok(text) => value(&text, "remote", name, "url"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(None),
        Err(_) => None,
    }
}

/// The last value of `section.subsection.key` in config `text` (see [`remote_url`]).
fn value(text: &str, section: &str, subsection: &str, key: &str) -> Option<Option<String>> {
    let mut inside = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.ends_with('\\') {
            return None;
        }
        if let Some(header) = line.strip_prefix('[') {
            let (header, rest) = header.split_once(']')?;
            if !is_comment(rest) {
                return None;
            }
            let (name, sub) = match header.trim().split_once(char::is_whitespace) {
                Some((name, quoted)) => (name, quoted.trim().strip_prefix('"')?.strip_suffix('"')?.to_string()),
                // `[remote.origin]`, the old form: its subsection is case-insensitive.
                None => match header.split_once('.') {
                    Some((name, sub)) => (name, sub.to_ascii_lowercase()),
                    None => (header, String::new()),
                },
            };
            if name.eq_ignore_ascii_case("include") || name.eq_ignore_ascii_case("includeIf") {
                return None;
            }
            inside = name.eq_ignore_ascii_case(section) && sub == subsection;
            continue;
        }
        if !inside || is_comment(line) {
            continue;
        }
        let (name, raw) = line.split_once('=').unwrap_or((line, ""));
        if name.trim().eq_ignore_ascii_case(key) {
            found = Some(unquote(raw)?);
        }
    }
    Some(found)
}

fn is_comment(text: &str) -> bool {
    let text = text.trim();
    text.is_empty() || text.starts_with('#') || text.starts_with(';')
}

/// A config value as git reads it: quotes removed, escapes resolved, a comment cut off, outer
/// whitespace dropped. `None` for an escape git refuses or an unclosed quote.
fn unquote(raw: &str) -> Option<String> {
    let mut value = String::new();
    // Whitespace seen outside quotes is kept only when something follows it.
    let mut pending = String::new();
    let mut quoted = false;
    let mut chars = raw.trim_start().chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => {
                let escaped = match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'b' => '\u{8}',
                    c @ ('"' | '\\') => c,
                    _ => return None,
                };
                value.push_str(&std::mem::take(&mut pending));
                value.push(escaped);
            }
            '#' | ';' if !quoted => break,
            c if c.is_whitespace() && !quoted => pending.push(c),
            c => {
                value.push_str(&std::mem::take(&mut pending));
                value.push(c);
            }
        }
    }
    if quoted { None } else { Some(value) }
}

#[cfg(test)]
mod reading {
    use super::value;

    fn origin(text: &str) -> Option<Option<String>> {
        value(text, "remote", "origin", "url")
    }

    #[test]
    fn the_url_of_the_named_remote_is_found() {
        let text = "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = git@a:x/y.git\n\
                    [remote \"origin\"]\n\turl = https://forge.example/team/app.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n";
        assert_eq!(origin(text), Some(Some("https://forge.example/team/app.git".into())));
    }

    #[test]
    fn quotes_escapes_comments_and_the_last_of_several_values_are_read_as_git_reads_them() {
        assert_eq!(origin("[remote \"origin\"]\n url = \"/srv/my repo\" # where\n"), Some(Some("/srv/my repo".into())));
        assert_eq!(origin("[remote \"origin\"]\nURL=a ; old\nurl = b\n"), Some(Some("b".into())));
        assert_eq!(origin("[remote \"origin\"]\nurl = a\\\\b\n"), Some(Some("a\\b".into())));
        assert_eq!(origin("[Remote.Origin]\nurl = old-style\n"), Some(Some("old-style".into())));
    }

    #[test]
    fn a_file_without_the_remote_says_so() {
        assert_eq!(origin("[core]\n\tbare = false\n"), Some(None));
        assert_eq!(origin("[remote \"Origin\"]\nurl = case matters in quotes\n"), Some(None));
    }

    #[test]
    fn what_only_git_can_answer_is_left_to_git() {
        assert_eq!(origin("[include]\n\tpath = other.config\n[remote \"origin\"]\nurl = a\n"), None);
        assert_eq!(origin("[includeIf \"gitdir:~/work/\"]\n\tpath = w\n"), None);
        assert_eq!(origin("[remote \"origin\"]\nurl = a\\\nb\n"), None);
        assert_eq!(origin("[remote \"origin\"]\nurl = \"unclosed\n"), None);
        assert_eq!(origin("[remote \"origin\"\nurl = a\n"), None);
    }
}
