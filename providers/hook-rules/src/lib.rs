//! The rules hook: matches messages by sender, recipient, subject or any header, and moves
//! them to a folder, deletes them, or stops the hook chain. Rules run in order; the first
//! rule that matches decides, like a mail client's rules.
//!
//! ```toml
//! [[rule]]
//! field = "header:X-Spam-Flag"   # sender, recipient, subject, or header:NAME
//! contains = "yes"               # case-insensitive
//! action = "move"                # move, delete or stop
//! folder = "Junk"                # for move
//! direction = "inbound"          # inbound (default), outbound or both
//! ```

use provider_abi::headers::{header, header_fields};
use provider_abi::{
    export_library, Direction, Hook, HookAction, HookMessage, Library, OpenContext, ProviderError,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    field: String,
    contains: String,
    action: ActionConfig,
    folder: Option<String>,
    #[serde(default)]
    direction: DirectionConfig,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ActionConfig {
    Move,
    Delete,
    Stop,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum DirectionConfig {
    #[default]
    Inbound,
    Outbound,
    Both,
}

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Sender,
    Recipient,
    Subject,
    Header(String),
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Move(String),
    Delete,
    Stop,
}

#[derive(Debug, Clone)]
struct Rule {
    field: Field,
    needle: String,
    action: Action,
    direction: DirectionConfig,
}

impl Rule {
    /// Checks rule `index`; an error is `(key, why)`.
    fn from_config(index: usize, config: RuleConfig) -> Result<Rule, (String, String)> {
        let at = |key: &str| format!("rule[{index}].{key}");
        let field = match config.field.to_ascii_lowercase().as_str() {
            "sender" => Field::Sender,
            "recipient" => Field::Recipient,
            "subject" => Field::Subject,
            other => match other.strip_prefix("header:") {
                Some(name) if !name.trim().is_empty() => Field::Header(name.trim().to_owned()),
                _ => {
                    return Err((
                        at("field"),
                        format!(
                            "`{}` is not sender, recipient, subject or header:NAME",
                            config.field
                        ),
                    ))
                }
            },
        };
        let action = match (config.action, config.folder) {
            (ActionConfig::Move, Some(folder)) if !folder.trim().is_empty() => {
                Action::Move(folder.trim().to_owned())
            }
            (ActionConfig::Move, _) => {
                return Err((at("folder"), "action `move` needs a folder name".into()))
            }
            (_, Some(_)) => {
                return Err((
                    at("folder"),
                    "only action `move` takes a folder; remove it".into(),
                ))
            }
            (ActionConfig::Delete, None) => Action::Delete,
            (ActionConfig::Stop, None) => Action::Stop,
        };
        if config.contains.is_empty() {
            return Err((at("contains"), "must not be empty".into()));
        }
        Ok(Rule {
            field,
            needle: config.contains.to_lowercase(),
            action,
            direction: config.direction,
        })
    }

    fn applies_to(&self, direction: Direction) -> bool {
        matches!(
            (self.direction, direction),
            (DirectionConfig::Both, _)
                | (DirectionConfig::Inbound, Direction::Inbound)
                | (DirectionConfig::Outbound, Direction::Outbound)
        )
    }

    fn matches(&self, message: &HookMessage<'_>) -> bool {
        let envelope = message.message.envelope;
        let content = message.message.content.as_slice();
        let contains = |text: &str| text.to_lowercase().contains(&self.needle);
        match &self.field {
            Field::Sender => {
                contains(&envelope.sender.to_string())
                    || header(content, "From").is_some_and(|from| contains(&from))
            }
            Field::Recipient => {
                envelope
                    .recipients
                    .iter()
                    .any(|r| contains(&r.address.to_string()))
                    || header_fields(content).iter().any(|(name, value)| {
                        ["to", "cc"].contains(&name.to_ascii_lowercase().as_str())
                            && contains(value)
                    })
            }
            Field::Subject => header(content, "Subject").is_some_and(|subject| contains(&subject)),
            Field::Header(name) => header_fields(content)
                .iter()
                .any(|(field, value)| field.eq_ignore_ascii_case(name) && contains(value)),
        }
    }
}

/// The hook instance: its rules in order.
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Opens it from its configuration table.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let config: Config = context.config_as()?;
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, rule)| Rule::from_config(index, rule))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(key, why)| context.config_error(&key, why))?;
        Ok(Rules { rules })
    }
}

impl Hook for Rules {
    fn run(&mut self, message: HookMessage<'_>) -> Result<HookAction, ProviderError> {
        let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.applies_to(message.direction) && rule.matches(&message))
        else {
            return Ok(HookAction::Leave);
        };
        log::debug!("message {} matches {:?}", message.message.envelope.id, rule);
        Ok(match &rule.action {
            Action::Move(folder) => HookAction::MoveTo {
                folder: folder.as_str().into(),
            },
            Action::Delete => HookAction::Delete,
            Action::Stop => HookAction::Stop,
        })
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).hook("rules", Rules::open)
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::ErrorKind;
    use provider_testkit::{check_hook, message, open_hook, run_hook};

    const RULES: &str = r#"
[[rule]]
field = "header:X-Spam-Flag"
contains = "yes"
action = "move"
folder = "Junk"

[[rule]]
field = "subject"
contains = "newsletter"
action = "delete"
direction = "both"

[[rule]]
field = "recipient"
contains = "carol"
action = "stop"
direction = "outbound"
"#;

    fn run(direction: Direction, content: &str) -> HookAction {
        let (mut hook, _) = open_hook(library, "rules", RULES).expect("the rules open");
        let message = message(&["SMTP:bob@example.net", "LOCAL:carol"], content);
        run_hook(&mut hook, direction, "Inbox", &message).expect("an action")
    }

    #[test]
    fn address_and_date_fields_are_matched_as_written() {
        let rules = r#"
[[rule]]
field = "header:From"
contains = "boss@example.com"
action = "move"
folder = "Boss"
"#;
        let (mut hook, _) = open_hook(library, "rules", rules).expect("the rules open");
        let from_boss = message(
            &["LOCAL:me"],
            "From: The Boss <boss@example.com>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n\r\nx",
        );
        assert_eq!(
            run_hook(&mut hook, Direction::Inbound, "Inbox", &from_boss),
            Ok(HookAction::MoveTo {
                folder: "Boss".into()
            })
        );
    }

    #[test]
    fn keeps_the_hosts_hook_contract() {
        check_hook(library, "rules", RULES).unwrap();
        check_hook(library, "rules", "").unwrap();
    }

    #[test]
    fn the_first_rule_that_matches_decides() {
        assert_eq!(
            run(
                Direction::Inbound,
                "X-Spam-Flag: YES\r\nSubject: newsletter\r\n\r\nx"
            ),
            HookAction::MoveTo {
                folder: "Junk".into()
            }
        );
        assert_eq!(
            run(Direction::Inbound, "Subject: Our Newsletter\r\n\r\nx"),
            HookAction::Delete
        );
        assert_eq!(
            run(Direction::Outbound, "X-Spam-Flag: yes\r\n\r\nx"),
            HookAction::Stop,
            "the spam rule is for inbound mail only"
        );
        assert_eq!(
            run(Direction::Inbound, "Subject: hello\r\n\r\nx"),
            HookAction::Leave
        );
    }

    #[test]
    fn a_wrong_rule_is_refused_naming_its_key() {
        let refused = |config: &str| {
            let error = open_hook(library, "rules", config).err().expect("refused");
            assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
            error.message().to_owned()
        };
        let misspelt = refused("[[rule]]\nfeild = \"subject\"\n");
        assert!(
            misspelt.starts_with(
                "instance \"rules-test\": key rule[0].feild at line 2: unknown field `feild`"
            ),
            "{misspelt}"
        );
        let action =
            refused("[[rule]]\nfield = \"subject\"\ncontains = \"x\"\naction = \"jump\"\n");
        assert!(
            action.contains("key rule[0].action at line 4: unknown variant `jump`"),
            "{action}"
        );
        let folder =
            refused("[[rule]]\nfield = \"subject\"\ncontains = \"x\"\naction = \"move\"\n");
        assert_eq!(
            folder,
            "instance \"rules-test\": key rule[0].folder: action `move` needs a folder name"
        );
        let field = refused("[[rule]]\nfield = \"body\"\ncontains = \"x\"\naction = \"stop\"\n");
        assert!(
            field.contains("key rule[0].field: `body` is not sender"),
            "{field}"
        );
    }
}
