//! Git and forges: what their webhooks say (GitHub, Gitea/Forgejo, GitLab) and how to trust it
//! (`webhook`, pure: payload bytes and header values in, a normalized [`webhook::Change`] out),
//! and every git command Tandem runs (`repo`: one runner with a timeout, repository facts,
//! clean and working-tree checkouts, mirrors; `config`: a value read from a repository's own
//! config file, and `objects`: HEAD's commit read from its files, where starting git would cost
//! more than the answer).

pub mod config;
pub mod objects;
pub mod repo;
pub mod webhook;

/// `text` with the credentials of every URL in it hidden: `https://user:token@host/x` becomes
/// `https://user:***@host/x`, `https://token@host/x` becomes `https://***@host/x`. For what is
/// shown or recorded (answers, events, errors, logs); the real URL is only given to git.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end =
            after.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"').unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(sign) => {
                let user_info = &authority[..sign];
                match user_info.split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:***")),
                    None => out.push_str("***"),
                }
                out.push_str(&authority[sign..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod redaction {
    #[test]
    fn credentials_in_urls_are_hidden_and_the_rest_kept() {
        let cases = [
            ("https://ana:ghp_secret@github.com/team/app.git", "https://ana:***@github.com/team/app.git"),
            (
                "clone https://oauth2:glpat-x@gitlab.example/a.git failed",
                "clone https://oauth2:***@gitlab.example/a.git failed",
            ),
            ("https://tok3n@host/x and ssh://git@host:22/y", "https://***@host/x and ssh://***@host:22/y"),
            ("https://host/no/credentials", "https://host/no/credentials"),
            ("/local/path and plain text", "/local/path and plain text"),
        ];
        for (text, want) in cases {
            assert_eq!(super::redact_credentials(text), want);
        }
    }
}
