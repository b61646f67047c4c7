//! GitHub's filter patterns for branches, tags and paths, and whether an event starts a workflow.

use spec::workflow::Trigger;

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Char(char),
    /// `*`: anything but `/`.
    Star,
    /// `**`: anything.
    DoubleStar,
    Class {
        chars: Vec<(char, char)>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Repeat {
    One,
    /// `?`: the previous atom zero or one time.
    Optional,
    /// `+`: the previous atom one or more times.
    OneOrMore,
}

/// A compiled filter pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub negated: bool,
    atoms: Vec<(Atom, Repeat)>,
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        let (negated, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut atoms: Vec<(Atom, Repeat)> = Vec::new();
        let chars: Vec<char> = body.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    atoms.push((Atom::DoubleStar, Repeat::One));
                    i += 2;
                    continue;
                }
                '*' => atoms.push((Atom::Star, Repeat::One)),
                '?' | '+' if !atoms.is_empty() && atoms.last().is_some_and(|(_, r)| *r == Repeat::One) => {
                    if let Some(last) = atoms.last_mut() {
                        last.1 = if c == '?' { Repeat::Optional } else { Repeat::OneOrMore };
                    }
                }
                '[' => {
                    if let Some(end) = chars[i + 1..].iter().position(|&c| c == ']') {
                        let inner = &chars[i + 1..i + 1 + end];
                        let (negated, inner) = match inner.first() {
                            Some('!') => (true, &inner[1..]),
                            _ => (false, inner),
                        };
                        let mut ranges = Vec::new();
                        let mut j = 0;
                        while j < inner.len() {
                            if j + 2 < inner.len() && inner[j + 1] == '-' {
                                ranges.push((inner[j], inner[j + 2]));
                                j += 3;
                            } else {
                                ranges.push((inner[j], inner[j]));
                                j += 1;
                            }
                        }
                        atoms.push((Atom::Class { chars: ranges, negated }, Repeat::One));
                        i += end + 2;
                        continue;
                    }
                    atoms.push((Atom::Char('['), Repeat::One));
                }
                '\\' if i + 1 < chars.len() => {
                    atoms.push((Atom::Char(chars[i + 1]), Repeat::One));
                    i += 2;
                    continue;
                }
                _ => atoms.push((Atom::Char(c), Repeat::One)),
            }
            i += 1;
        }
        Pattern { negated, atoms }
    }

    /// Whether the pattern (ignoring its `!`) matches the whole of `text`.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // reachable[j]: the atoms matched so far can end exactly before text[j].
        let mut reachable = vec![false; text.len() + 1];
        reachable[0] = true;
        for (atom, repeat) in &self.atoms {
            let mut next = vec![false; text.len() + 1];
            for start in 0..=text.len() {
                if !reachable[start] {
                    continue;
                }
                match atom {
                    Atom::Star | Atom::DoubleStar => {
                        next[start] = true;
                        for end in start..text.len() {
                            if *atom == Atom::Star && text[end] == '/' {
                                break;
                            }
                            next[end + 1] = true;
                        }
                    }
                    _ => {
                        if *repeat == Repeat::Optional {
                            next[start] = true;
                        }
                        let mut at = start;
                        while at < text.len() && atom_matches(atom, text[at]) {
                            next[at + 1] = true;
                            at += 1;
                            if *repeat != Repeat::OneOrMore {
                                break;
                            }
                        }
                    }
                }
            }
            reachable = next;
        }
        reachable[text.len()]
    }
}

fn atom_matches(atom: &Atom, c: char) -> bool {
    match atom {
        Atom::Char(expected) => *expected == c,
        Atom::Class { chars, negated } => chars.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        Atom::Star | Atom::DoubleStar => true,
    }
}

/// Applies a pattern list in order; a later `!pattern` can exclude what an earlier one included.
pub fn list_matches(patterns: &[String], text: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        let pattern = Pattern::new(pattern);
        if pattern.matches(text) {
            matched = !pattern.negated;
        }
    }
    matched
}

/// The facts about an event that decide whether a trigger fires.
#[derive(Debug, Clone, Default)]
pub struct EventFacts<'a> {
    pub event: &'a str,
    /// The full ref (`refs/heads/main`, `refs/tags/v1`); for pull requests, the base branch.
    pub git_ref: Option<&'a str>,
    /// Files the change touches; `None` when unknown (filters then let the event through).
    pub changed_paths: Option<&'a [String]>,
    /// The activity type, e.g. `opened` for a pull request.
    pub action: Option<&'a str>,
}

/// Why a trigger did not fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    NoSuchEvent,
    Branch(String),
    Tag(String),
    Paths,
    ActivityType(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NoSuchEvent => f.write_str("the workflow does not run on this event"),
            Skip::Branch(b) => write!(f, "branch `{b}` is filtered out"),
            Skip::Tag(t) => write!(f, "tag `{t}` is filtered out"),
            Skip::Paths => f.write_str("no changed file passes the paths filter"),
            Skip::ActivityType(t) => write!(f, "activity type `{t}` is not listed in `types`"),
        }
    }
}

/// Whether `trigger` fires for the event described by `facts`.
pub fn fires(trigger: &Trigger, facts: &EventFacts<'_>) -> Result<(), Skip> {
    if trigger.event != facts.event {
        return Err(Skip::NoSuchEvent);
    }
    if let Some(action) = facts.action {
        let default_types: &[&str] = match trigger.event.as_str() {
            "pull_request" | "pull_request_target" => &["opened", "synchronize", "reopened"],
            _ => &[],
        };
        let listed = if trigger.types.is_empty() {
            default_types.contains(&action) || default_types.is_empty()
        } else {
            trigger.types.iter().any(|t| t == action)
        };
        if !listed {
            return Err(Skip::ActivityType(action.to_string()));
        }
    }
    let mut is_tag = false;
    if let Some(git_ref) = facts.git_ref {
        let has_branch_filter = trigger.branches.is_some() || trigger.branches_ignore.is_some();
        let has_tag_filter = trigger.tags.is_some() || trigger.tags_ignore.is_some();
        if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
            is_tag = true;
            if has_branch_filter && !has_tag_filter {
                return Err(Skip::Tag(tag.to_string()));
            }
            if let Some(tags) = &trigger.tags
                && !list_matches(tags, tag)
            {
                return Err(Skip::Tag(tag.to_string()));
            }
            if let Some(ignore) = &trigger.tags_ignore
                && list_matches(ignore, tag)
            {
                return Err(Skip::Tag(tag.to_string()));
            }
        } else {
            let branch = git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref);
            if has_tag_filter && !has_branch_filter {
                return Err(Skip::Branch(branch.to_string()));
            }
            if let Some(branches) = &trigger.branches
                && !list_matches(branches, branch)
            {
                return Err(Skip::Branch(branch.to_string()));
            }
            if let Some(ignore) = &trigger.branches_ignore
                && list_matches(ignore, branch)
            {
                return Err(Skip::Branch(branch.to_string()));
            }
        }
    }
    if let (Some(paths), false) = (facts.changed_paths, is_tag) {
        if let Some(filter) = &trigger.paths
            && !paths.iter().any(|p| list_matches(filter, p))
        {
            return Err(Skip::Paths);
        }
        if let Some(ignore) = &trigger.paths_ignore
            && !paths.is_empty()
            && paths.iter().all(|p| list_matches(ignore, p))
        {
            return Err(Skip::Paths);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_github_cheat_sheet() {
        let cases: &[(&str, &str, bool)] = &[
            ("feature/*", "feature/my-branch", true),
            ("feature/*", "feature/your/branch", false),
            ("feature/**", "feature/your/branch", true),
            ("main", "main", true),
            ("main", "mainline", false),
            ("'*'", "'x'", true),
            ("v2*", "v2.0", true),
            ("v[12].[0-9]+.[0-9]+", "v1.10.1", true),
            ("v[12].[0-9]+.[0-9]+", "v3.0.0", false),
            ("v1.?", "v1", true),
            ("v1?", "v", true),
            ("v1.?", "v12", false),
            ("v1?", "v1", true),
            ("**.js", "app/index.js", true),
            ("*.js", "app/index.js", false),
            ("docs/**", "docs/a/b.md", true),
            ("**/docs/**", "src/docs/a.md", true),
            ("*", "a/b", false),
            ("**", "a/b", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(Pattern::new(pattern).matches(text), *expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn later_negations_win() {
        let patterns = vec!["releases/**".to_string(), "!releases/**-alpha".to_string()];
        assert!(list_matches(&patterns, "releases/10"));
        assert!(!list_matches(&patterns, "releases/10-alpha"));
    }

    fn trigger(f: impl FnOnce(&mut Trigger)) -> Trigger {
        let mut t = Trigger { event: "push".into(), ..Trigger::default() };
        f(&mut t);
        t
    }

    #[test]
    fn branch_tag_and_path_filters() {
        let t = trigger(|t| t.branches = Some(vec!["main".into()]));
        let facts = |r| EventFacts { event: "push", git_ref: Some(r), ..EventFacts::default() };
        assert_eq!(fires(&t, &facts("refs/heads/main")), Ok(()));
        assert_eq!(fires(&t, &facts("refs/heads/dev")), Err(Skip::Branch("dev".into())));
        assert_eq!(fires(&t, &facts("refs/tags/v1")), Err(Skip::Tag("v1".into())));
        let any = trigger(|_| {});
        assert_eq!(fires(&any, &facts("refs/tags/v1")), Ok(()));

        let paths = vec!["README.md".to_string()];
        let t = trigger(|t| t.paths_ignore = Some(vec!["**.md".into()]));
        let facts =
            EventFacts { event: "push", git_ref: Some("refs/heads/main"), changed_paths: Some(&paths), action: None };
        assert_eq!(fires(&t, &facts), Err(Skip::Paths));
        let t = trigger(|t| t.paths = Some(vec!["src/**".into()]));
        assert_eq!(fires(&t, &facts), Err(Skip::Paths));
    }

    #[test]
    fn pull_request_types_default() {
        let t = Trigger { event: "pull_request".into(), ..Trigger::default() };
        let facts = |a| EventFacts { event: "pull_request", action: Some(a), ..EventFacts::default() };
        assert_eq!(fires(&t, &facts("opened")), Ok(()));
        assert_eq!(fires(&t, &facts("closed")), Err(Skip::ActivityType("closed".into())));
    }
}
