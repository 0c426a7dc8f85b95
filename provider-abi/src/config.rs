//! Typed configuration: an instance's TOML table read into a `#[derive(Deserialize)]` struct,
//! with errors that name the instance, the key, the line and what was expected.
//!
//! The host passes each instance its table from the profile as TOML text
//! ([`OpenContext::config`](crate::OpenContext::config)); [`OpenContext::config_as`](crate::OpenContext::config_as)
//! reads it into your type. A wrong value reads as
//!
//! ```text
//! instance "relay": key port at line 2: invalid type: string "x", expected u16
//! ```
//!
//! and with `#[serde(deny_unknown_fields)]` a misspelt key is an error naming it and the keys
//! that exist. The line is the line in the instance's table as the host passes it (the host
//! writes an inline `config = { … }` table out one key per line), which the operator never
//! sees: the host rewrites an error of this wording to point at the profile's file and line,
//! `/etc/spooler.toml:12: key `port` of [[transport]] "relay": invalid type: …`, by the key.
//! So keep the wording these functions give (`instance "NAME": key KEY…: WHY`), and name keys
//! by their dotted path in the table.
//!
//! ```
//! use provider_abi::config::from_toml;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     host: String,
//!     port: Option<u16>,
//! }
//!
//! let config: Config = from_toml("relay", "host = \"mail.example.com\"\nport = 587").unwrap();
//! assert_eq!(config.port, Some(587));
//!
//! let error = from_toml::<Config>("relay", "host = \"mail.example.com\"\nport = \"x\"")
//!     .err()
//!     .unwrap();
//! assert_eq!(
//!     error.message(),
//!     "instance \"relay\": key port at line 2: invalid type: string \"x\", expected u16"
//! );
//! let error = from_toml::<Config>("relay", "host = \"mail.example.com\"\nprot = 25")
//!     .err()
//!     .unwrap();
//! assert!(error.message().starts_with("instance \"relay\": key prot at line 2: unknown field `prot`"));
//! ```

use serde::de::DeserializeOwned;

use crate::error::ProviderError;

/// Reads `text`, the TOML table of instance `instance`, into a `T`.
///
/// On failure it returns a [`ProviderError::configuration`] whose message names the
/// instance, the dotted key (`transport.port`, `rule[2].action`), the line, and serde's
/// words for what was wrong and what was expected.
pub fn from_toml<T: DeserializeOwned>(instance: &str, text: &str) -> Result<T, ProviderError> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let key = error.path().to_string();
        let inner = error.inner();
        // An empty table has no line to point at.
        let line = inner
            .span()
            .filter(|_| !text.trim().is_empty())
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let mut message = format!("instance \"{instance}\": ");
        if key != "." {
            message.push_str(&format!("key {key} "));
        }
        if let Some(line) = line {
            message.push_str(&format!("at line {line}"));
        }
        if key != "." || line.is_some() {
            message.push_str(": ");
        }
        message.push_str(inner.message().trim_end());
        ProviderError::configuration(message)
    })
}

/// A configuration error about `key` of instance `instance`, for what `from_toml` cannot
/// check (a folder that does not exist, two keys that go together): worded like its errors,
/// `instance "relay": key ca_file: cannot read /etc/ca.pem: No such file or directory`.
///
/// `why` should say what to do about it. An empty `key` is a problem of the whole table.
pub fn error(instance: &str, key: &str, why: impl std::fmt::Display) -> ProviderError {
    if key.is_empty() {
        ProviderError::configuration(format!("instance \"{instance}\": {why}"))
    } else {
        ProviderError::configuration(format!("instance \"{instance}\": key {key}: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        name: String,
        transport: Option<Transport>,
        #[serde(default, rename = "rule")]
        rules: Vec<Rule>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Transport {
        port: u16,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        #[allow(dead_code)]
        action: Action,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Action {
        Move,
    }

    fn error(text: &str) -> String {
        from_toml::<Config>("smtp", text)
            .expect_err("refused")
            .message()
            .to_owned()
    }

    #[test]
    fn a_wrong_value_names_the_instance_the_key_the_line_and_the_expectation() {
        assert_eq!(
            error("name = \"a\"\n\n[transport]\nport = \"x\"\n"),
            "instance \"smtp\": key transport.port at line 4: invalid type: string \"x\", expected u16"
        );
        assert_eq!(
            error("name = \"a\"\n[[rule]]\naction = \"move\"\n[[rule]]\naction = \"jump\"\n"),
            "instance \"smtp\": key rule[1].action at line 5: unknown variant `jump`, expected `move`"
        );
    }

    #[test]
    fn a_misspelt_key_is_named_with_the_keys_that_exist() {
        let misspelt = error("name = \"a\"\n[transport]\nprot = 25\n");
        assert!(
            misspelt.starts_with(
                "instance \"smtp\": key transport.prot at line 3: unknown field `prot`, expected `port`"
            ),
            "{misspelt}"
        );
    }

    #[test]
    fn a_missing_key_and_bad_syntax_say_so() {
        assert_eq!(error(""), "instance \"smtp\": missing field `name`");
        assert_eq!(
            error("[transport]\nport = 1\n"),
            "instance \"smtp\": at line 1: missing field `name`"
        );
        let syntax = error("name = \"a\"\nport = \n");
        assert!(
            syntax.starts_with("instance \"smtp\": at line 2: "),
            "{syntax}"
        );
    }

    #[test]
    fn a_good_table_reads() {
        let config: Config =
            from_toml("smtp", "name = \"a\"\n[transport]\nport = 25\n").expect("read");
        assert_eq!(config.name, "a");
        assert_eq!(config.transport.map(|t| t.port), Some(25));
        assert!(config.rules.is_empty());
    }
}
