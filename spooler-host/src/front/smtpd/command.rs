//! SMTP command lines (RFC 5321 section 4.1) read into commands: the verb, the path of MAIL
//! and RCPT with their ESMTP parameters, and the argument of the others. Syntax only; what a
//! command means in a session is `session.rs`'s.

/// One command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpCommand {
    /// EHLO with the client's name.
    Ehlo(String),
    /// HELO with the client's name.
    Helo(String),
    /// MAIL FROM: the reverse path (empty for `<>`) and parameters.
    Mail(String, Vec<Parameter>),
    /// RCPT TO: the forward path and parameters.
    Rcpt(String, Vec<Parameter>),
    /// DATA.
    Data,
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
    /// VRFY with its argument.
    Vrfy,
    /// HELP.
    Help,
    /// STARTTLS.
    StartTls,
    /// AUTH with the mechanism and the initial response, if given.
    Auth(String, Option<String>),
}

/// An ESMTP parameter: the keyword (upper case) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// The keyword, upper case.
    pub keyword: String,
    /// The value, if any.
    pub value: Option<String>,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// No such command (500).
    Unknown(String),
    /// A known command with bad arguments (501).
    Syntax(&'static str),
}

/// Reads one command line (without its CRLF).
pub fn parse(line: &str) -> Result<SmtpCommand, Unreadable> {
    let (verb, rest) = match line.find(' ') {
        Some(space) => (&line[..space], line[space + 1..].trim()),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_argument = |command: SmtpCommand| {
        if rest.is_empty() {
            Ok(command)
        } else {
            Err(Unreadable::Syntax("this command takes no argument"))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" if rest.is_empty() => {
            Err(Unreadable::Syntax("give your host name: EHLO name"))
        }
        "EHLO" => Ok(SmtpCommand::Ehlo(rest.to_owned())),
        "HELO" => Ok(SmtpCommand::Helo(rest.to_owned())),
        "MAIL" => {
            let (path, parameters) = path_and_parameters(rest, "FROM:").ok_or(
                Unreadable::Syntax("expected MAIL FROM:<address> [parameters]"),
            )?;
            Ok(SmtpCommand::Mail(path, parameters))
        }
        "RCPT" => {
            let (path, parameters) = path_and_parameters(rest, "TO:").ok_or(Unreadable::Syntax(
                "expected RCPT TO:<address> [parameters]",
            ))?;
            if path.is_empty() {
                return Err(Unreadable::Syntax("a recipient cannot be empty"));
            }
            Ok(SmtpCommand::Rcpt(path, parameters))
        }
        "DATA" => no_argument(SmtpCommand::Data),
        "RSET" => no_argument(SmtpCommand::Rset),
        "NOOP" => Ok(SmtpCommand::Noop),
        "QUIT" => no_argument(SmtpCommand::Quit),
        "VRFY" => Ok(SmtpCommand::Vrfy),
        "HELP" => Ok(SmtpCommand::Help),
        "STARTTLS" => no_argument(SmtpCommand::StartTls),
        "AUTH" => {
            let mut words = rest.split_ascii_whitespace();
            let mechanism = words.next().ok_or(Unreadable::Syntax(
                "expected AUTH mechanism [initial-response]",
            ))?;
            let initial = words.next().map(str::to_owned);
            if words.next().is_some() {
                return Err(Unreadable::Syntax(
                    "expected AUTH mechanism [initial-response]",
                ));
            }
            Ok(SmtpCommand::Auth(mechanism.to_ascii_uppercase(), initial))
        }
        _ => Err(Unreadable::Unknown(verb)),
    }
}

/// `FROM:<path> KEY=VALUE ...`: the path without its brackets (and without a source route),
/// and the parameters. A space after the colon is accepted, as many clients send one.
fn path_and_parameters(text: &str, prefix: &str) -> Option<(String, Vec<Parameter>)> {
    let head = text.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = text[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = closing_bracket(inner)?;
    let mut path = &inner[..end];
    // A source route (`@a,@b:user@c`) is ignored, as RFC 5321 asks.
    if path.starts_with('@') {
        path = &path[path.find(':')? + 1..];
    }
    let parameters = inner[end + 1..]
        .split_ascii_whitespace()
        .map(|word| match word.split_once('=') {
            Some((keyword, value)) => Parameter {
                keyword: keyword.to_ascii_uppercase(),
                value: Some(value.to_owned()),
            },
            None => Parameter {
                keyword: word.to_ascii_uppercase(),
                value: None,
            },
        })
        .collect();
    Some((path.to_owned(), parameters))
}

/// The index of the `>` that ends a path, skipping quoted strings.
fn closing_bracket(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(index),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter(keyword: &str, value: Option<&str>) -> Parameter {
        Parameter {
            keyword: keyword.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn mail_and_rcpt_give_the_path_and_parameters() {
        assert_eq!(
            parse("MAIL FROM:<a@example.com> SIZE=100 body=8BITMIME"),
            Ok(SmtpCommand::Mail(
                "a@example.com".into(),
                vec![
                    parameter("SIZE", Some("100")),
                    parameter("BODY", Some("8BITMIME"))
                ]
            ))
        );
        assert_eq!(
            parse("mail from: <>"),
            Ok(SmtpCommand::Mail(String::new(), vec![]))
        );
        assert_eq!(
            parse("RCPT TO:<@relay.example:\"b >x\"@example.net> NOTIFY=SUCCESS,FAILURE"),
            Ok(SmtpCommand::Rcpt(
                "\"b >x\"@example.net".into(),
                vec![parameter("NOTIFY", Some("SUCCESS,FAILURE"))]
            ))
        );
    }

    #[test]
    fn bad_lines_are_told_apart() {
        assert_eq!(
            parse("MAIL FROM:a@example.com"),
            Err(Unreadable::Syntax(
                "expected MAIL FROM:<address> [parameters]"
            ))
        );
        assert!(matches!(parse("RCPT TO:<>"), Err(Unreadable::Syntax(_))));
        assert!(matches!(parse("EHLO"), Err(Unreadable::Syntax(_))));
        assert!(matches!(parse("DATA now"), Err(Unreadable::Syntax(_))));
        assert_eq!(
            parse("BDAT 100 LAST"),
            Err(Unreadable::Unknown("BDAT".into()))
        );
        assert_eq!(
            parse("auth plain AGEAYg=="),
            Ok(SmtpCommand::Auth("PLAIN".into(), Some("AGEAYg==".into())))
        );
        assert_eq!(
            parse("ehlo client.example"),
            Ok(SmtpCommand::Ehlo("client.example".into()))
        );
    }
}
