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

/// Replaces every secret in `line` with `***`. Longer secrets go first so that a secret that
/// contains another is hidden whole.
pub fn mask(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_string();
    for secret in secrets {
        if !secret.is_empty() && out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
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
        let secrets = vec!["abcdef".to_string(), "abc".to_string()];
        assert_eq!(mask("token abcdef and abc", &secrets), "token *** and ***");
    }
}
