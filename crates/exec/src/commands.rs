//! The files and output commands a step uses to talk back: `$GITHUB_OUTPUT`, `$GITHUB_ENV`,
//! `$GITHUB_PATH`, and `::command::` lines such as `::add-mask::`.

/// Parses the `name=value` / heredoc (`name<<DELIMITER`) format of `$GITHUB_OUTPUT` and `$GITHUB_ENV`.
pub fn parse_key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        let heredoc = line.find("<<").filter(|&h| line.find('=').is_none_or(|e| h < e));
        if let Some(at) = heredoc {
            let name = &line[..at];
            let delimiter = &line[at + 2..];
            if name.is_empty() || delimiter.is_empty() {
                return Err(format!("line {}: `{line}` needs a name before `<<` and a delimiter after it", number + 1));
            }
            let mut value: Vec<&str> = Vec::new();
            let mut closed = false;
            for (_, body) in lines.by_ref() {
                if body == delimiter {
                    closed = true;
                    break;
                }
                value.push(body);
            }
            if !closed {
                return Err(format!(
                    "line {}: the value of `{name}` is never closed by a line `{delimiter}`",
                    number + 1
                ));
            }
            out.push((name.to_string(), value.join("\n")));
        } else if let Some((name, value)) = line.split_once('=') {
            if name.is_empty() {
                return Err(format!("line {}: `{line}` has no name before `=`", number + 1));
            }
            out.push((name.to_string(), value.to_string()));
        } else {
            return Err(format!("line {}: `{line}` is neither `name=value` nor `name<<DELIMITER`", number + 1));
        }
    }
    Ok(out)
}

/// A `::command::` found in a step's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowCommand {
    AddMask(String),
    Group(String),
    EndGroup,
    /// `error`, `warning`, `notice` or `debug`, with the message.
    Annotation {
        level: String,
        message: String,
    },
    SetOutput {
        name: String,
        value: String,
    },
    /// The deprecated `::save-state name=N::V`, as `$GITHUB_STATE`.
    SaveState {
        name: String,
        value: String,
    },
    /// `::stop-commands::TOKEN`: no command is read until a line `::TOKEN::`.
    StopCommands(String),
}

/// Recognises a workflow command line. Returns `None` for ordinary output.
pub fn parse_command(line: &str) -> Option<WorkflowCommand> {
    let rest = line.trim_start().strip_prefix("::")?;
    let (head, message) = rest.split_once("::")?;
    let (name, properties) = match head.split_once(' ') {
        Some((name, properties)) => (name, properties),
        None => (head, ""),
    };
    let message = unescape(message);
    Some(match name {
        "add-mask" => WorkflowCommand::AddMask(message),
        "group" => WorkflowCommand::Group(message),
        "endgroup" => WorkflowCommand::EndGroup,
        "error" | "warning" | "notice" | "debug" => WorkflowCommand::Annotation { level: name.to_string(), message },
        "set-output" => {
            let name = properties.split(',').find_map(|p| p.trim().strip_prefix("name="))?.to_string();
            WorkflowCommand::SetOutput { name, value: message }
        }
        "save-state" => {
            let name = properties.split(',').find_map(|p| p.trim().strip_prefix("name="))?.to_string();
            WorkflowCommand::SaveState { name, value: message }
        }
        "stop-commands" if !message.is_empty() => WorkflowCommand::StopCommands(message),
        _ => return None,
    })
}

fn unescape(text: &str) -> String {
    text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")
}

/// The values to hide in a job's output, searched all at once (one Aho-Corasick automaton,
/// leftmost-longest, so a secret that contains another is hidden whole): a line without any costs
/// one pass over its bytes, however many secrets there are.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<String>,
    /// Shared between the jobs of a run until one of them adds a mask: building the automaton
    /// is the costly part.
    finder: Option<std::sync::Arc<aho_corasick::AhoCorasick>>,
}

impl Masker {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Masker {
        let mut masker =
            Masker { secrets: secrets.into_iter().filter(|s| !s.is_empty()).collect(), ..Default::default() };
        masker.secrets.sort();
        masker.secrets.dedup();
        masker.build();
        masker
    }

    fn build(&mut self) {
        self.finder = if self.secrets.is_empty() {
            None
        } else {
            // A contiguous NFA: built in a quarter of the time of the DFA the builder picks for a
            // few secrets (a run builds one before its first step), and as quick on a log line.
            aho_corasick::AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(&self.secrets)
                .ok()
                .map(std::sync::Arc::new)
        };
    }

    /// Hides `secret` from now on (`::add-mask::`).
    pub fn add(&mut self, secret: String) {
        if !secret.is_empty() && !self.secrets.contains(&secret) {
            self.secrets.push(secret);
            self.build();
        }
    }

    /// `line` with every secret replaced by `***`.
    pub fn mask(&self, line: &str) -> String {
        match &self.finder {
            Some(finder) if finder.is_match(line) => finder.replace_all(line, &vec!["***"; self.secrets.len()]),
            _ => line.to_string(),
        }
    }

    /// [`Masker::mask`] of a line that is the caller's to give: a line without a secret (nearly
    /// every line) is handed back as it is, not copied.
    pub fn mask_owned(&self, line: String) -> String {
        match &self.finder {
            Some(finder) if finder.is_match(&line) => finder.replace_all(&line, &vec!["***"; self.secrets.len()]),
            _ => line,
        }
    }
}

/// What a secret may look like in a log, each of which is masked: the value; each line of a
/// multi-line value; its base64 (standard, without padding, URL-safe); its URL and JSON
/// escapings. Derived forms shorter than four characters are left out (they would mask noise).
pub fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string()];
    if secret.contains('\n') {
        forms.extend(secret.lines().map(str::trim).filter(|l| l.len() >= 4).map(str::to_string));
    }
    let bytes = secret.as_bytes();
    let standard = base64(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");
    forms.push(standard.trim_end_matches('=').to_string());
    forms.push(standard.clone());
    forms.push(
        base64(bytes, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            .trim_end_matches('=')
            .to_string(),
    );
    let percent: String = bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    forms.push(percent);
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.retain(|f| f == secret || f.len() >= 4);
    forms.sort();
    forms.dedup();
    forms
}

/// Base64 with `alphabet`, padded with `=`.
pub(crate) fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_heredocs() {
        let text = "a=1\nb=x=y\nmulti<<EOF\nline 1\nline 2\nEOF\nempty=\n";
        let got = parse_key_values(text).unwrap();
        assert_eq!(
            got,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x=y".into()),
                ("multi".into(), "line 1\nline 2".into()),
                ("empty".into(), String::new())
            ]
        );
        assert!(parse_key_values("x<<EOF\nnever closed\n").unwrap_err().contains("never closed"));
        assert!(parse_key_values("just text\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn commands() {
        assert_eq!(parse_command("::add-mask::hunter2"), Some(WorkflowCommand::AddMask("hunter2".into())));
        assert_eq!(
            parse_command("::error file=a.rs,line=1::bad%0Athing"),
            Some(WorkflowCommand::Annotation { level: "error".into(), message: "bad\nthing".into() })
        );
        assert_eq!(
            parse_command("::set-output name=x::1"),
            Some(WorkflowCommand::SetOutput { name: "x".into(), value: "1".into() })
        );
        assert_eq!(parse_command("plain :: text"), None);
    }

    #[test]
    fn masks_longest_first() {
        let masker = Masker::new(vec!["abc".to_string(), "abcdef".to_string()]);
        assert_eq!(masker.mask("token abcdef and abc"), "token *** and ***");
        assert_eq!(masker.mask("token abcdef and abc, abcabcdef"), "token *** and ***, ******");
        assert_eq!(masker.mask("nothing here"), "nothing here");
    }

    #[test]
    fn a_given_line_is_masked_the_same_and_kept_when_clean() {
        let masker = Masker::new(vec!["abc".to_string(), "abcdef".to_string()]);
        for line in ["token abcdef and abc", "abcabcdef", "nothing here", ""] {
            assert_eq!(masker.mask_owned(line.to_string()), masker.mask(line), "{line}");
        }
        let clean = String::from("nothing secret here");
        let at = clean.as_ptr();
        let handed_back = masker.mask_owned(clean);
        assert_eq!(handed_back.as_ptr(), at, "a clean line is handed back, not copied");
        assert_eq!(Masker::new(Vec::new()).mask_owned("abc".to_string()), "abc");
    }
}
