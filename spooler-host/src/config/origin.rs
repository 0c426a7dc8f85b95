//! Where each provider table of the profile, and each key of its `config`, sits in the
//! profile file; and a provider's configuration error rewritten to point there.
//!
//! The host hands a provider its `config` table as TOML text of its own writing (an inline
//! `config = { … }` comes out one key per line), so the line a provider's error names
//! (`instance "smarthost": key tls at line 3: …`, as `provider_abi::config` words it) is a
//! line of that text, which the operator never sees. The key path in the error is the
//! operator's, though: this module finds it in the profile, and the error reads
//! `/etc/spooler.toml:12: key `tls` of [[transport]] "smarthost": …`.
//!
//! May call: nothing of the host (it reads the profile's text with `toml`'s spans).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// Where one provider table sits in the profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The profile file.
    file: PathBuf,
    /// The table as the operator knows it: `[[transport]] "smarthost"`, `[store] "embedded"`.
    table: String,
    /// The line of its `config` key, or of the table when it has none: where an error about
    /// the whole table (a missing key) points.
    line: usize,
    /// Every key and array element inside `config`, by its path as `serde_path_to_error`
    /// writes it (`tls`, `transport.port`, `rule[1].action`), with its line.
    keys: Vec<(String, usize)>,
}

impl Origin {
    /// `message`, a configuration error of instance `instance` opened from this table,
    /// pointing at the profile's file and line instead of the line of the text the host
    /// handed the provider. A message not worded as `provider_abi::config` words them is
    /// kept whole, after the file and the line of the table's `config`.
    pub fn explain(&self, instance: &str, message: &str) -> String {
        let file = self.file.display();
        let table = &self.table;
        let Some(said) = Said::parse(instance, message) else {
            return format!("{file}:{}: {table}: {message}", self.line);
        };
        match said.key {
            Some(key) => {
                let line = self.line_of(key).unwrap_or(self.line);
                format!("{file}:{line}: key `{key}` of {table}: {}", said.rest)
            }
            None => format!("{file}:{}: {table}: {}", self.line, said.rest),
        }
    }

    /// The line of `key`, or of the innermost key written in the file that holds it (a
    /// provider may name a key below one whose value is not a table, or one the operator left
    /// out).
    fn line_of(&self, key: &str) -> Option<usize> {
        self.keys
            .iter()
            .filter(|(path, _)| {
                key.strip_prefix(path.as_str())
                    .is_some_and(|tail| tail.is_empty() || tail.starts_with(['.', '[']))
            })
            .max_by_key(|(path, _)| path.len())
            .map(|(_, line)| *line)
    }
}

/// What a provider's configuration error says, taken apart: the key it is about, if any, and
/// the rest, with the line in the host's text left out.
struct Said<'a> {
    key: Option<&'a str>,
    rest: &'a str,
}

impl<'a> Said<'a> {
    /// `instance "NAME": [key KEY ][at line N]: REST`, as `provider_abi::config::from_toml`
    /// and `config_error` write it; `None` for any other wording.
    fn parse(instance: &str, message: &'a str) -> Option<Said<'a>> {
        let after = message
            .strip_prefix("instance \"")?
            .strip_prefix(instance)?
            .strip_prefix("\": ")?;
        if let Some(keyed) = after.strip_prefix("key ") {
            let (head, rest) = keyed.split_once(": ")?;
            let key = without_line(head).unwrap_or(head);
            return Some(Said {
                key: Some(key),
                rest,
            });
        }
        let rest = after
            .strip_prefix("at line ")
            .and_then(|tail| tail.split_once(": "))
            .filter(|(line, _)| is_number(line))
            .map_or(after, |(_, rest)| rest);
        Some(Said { key: None, rest })
    }
}

/// `head` without a trailing ` at line N`, if it has one.
fn without_line(head: &str) -> Option<&str> {
    let (key, line) = head.rsplit_once(" at line ")?;
    is_number(line).then_some(key)
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// The provider tables of a profile, in file order, with where they sit.
#[derive(Debug, Default)]
pub(super) struct ProviderTables {
    pub store: Option<Origin>,
    pub transports: Vec<Origin>,
    pub preprocessors: Vec<Origin>,
    pub hooks: Vec<Origin>,
}

/// Finds the provider tables of `text`, the profile in `file`. `names` gives each table's
/// instance name by its key (`store`, `transport`) and index. A text that does not read (it
/// has been read once already, so it does) gives no tables: errors then keep the provider's
/// wording.
pub(super) fn provider_tables(
    file: &Path,
    text: &str,
    names: impl Fn(&str, usize) -> String,
) -> ProviderTables {
    let Ok(Node::Table(root)) = toml::from_str::<Node>(text) else {
        return ProviderTables::default();
    };
    let lines = Lines(text);
    let origin = |key: &str, index: usize, heading: String, table: &Spanned<Node>| {
        let mut origin = Origin {
            file: file.to_owned(),
            table: format!("{heading} \"{}\"", names(key, index)),
            line: lines.of(table.span().start),
            keys: Vec::new(),
        };
        if let Node::Table(entries) = table.get_ref() {
            if let Some((config_key, config)) =
                entries.iter().find(|(k, _)| k.get_ref() == "config")
            {
                origin.line = lines.of(config_key.span().start);
                lines.walk(config.get_ref(), "", &mut origin.keys);
            }
        }
        origin
    };
    let mut tables = ProviderTables::default();
    for (key, value) in &root {
        let list = match key.get_ref().as_str() {
            "store" => {
                tables.store = Some(origin("store", 0, "[store]".into(), value));
                continue;
            }
            "transport" => &mut tables.transports,
            "preprocessor" => &mut tables.preprocessors,
            "hook" => &mut tables.hooks,
            _ => continue,
        };
        if let Node::Array(elements) = value.get_ref() {
            let heading = format!("[[{}]]", key.get_ref());
            list.extend(
                elements
                    .iter()
                    .enumerate()
                    .map(|(index, table)| origin(key.get_ref(), index, heading.clone(), table)),
            );
        }
    }
    tables
}

/// Byte offsets of a text turned into line numbers.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    /// The 1-based line of byte `offset`.
    fn of(&self, offset: usize) -> usize {
        let before = &self.0.as_bytes()[..offset.min(self.0.len())];
        before.iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// Records the line of every key and element under `node`, whose path is `path`.
    fn walk(&self, node: &Node, path: &str, found: &mut Vec<(String, usize)>) {
        match node {
            Node::Table(entries) => {
                for (key, value) in entries {
                    let path = if path.is_empty() {
                        key.get_ref().clone()
                    } else {
                        format!("{path}.{}", key.get_ref())
                    };
                    found.push((path.clone(), self.of(key.span().start)));
                    self.walk(value.get_ref(), &path, found);
                }
            }
            Node::Array(elements) => {
                for (index, element) in elements.iter().enumerate() {
                    let path = format!("{path}[{index}]");
                    found.push((path.clone(), self.of(element.span().start)));
                    self.walk(element.get_ref(), &path, found);
                }
            }
            Node::Leaf => {}
        }
    }
}

/// A TOML value reduced to its shape, each key and element with its span in the text.
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        loop {
            let key = match map.next_key::<Spanned<String>>() {
                Ok(Some(key)) => key,
                Ok(None) => break,
                // toml hands a date or a time to `deserialize_any` as a map of one key that
                // has no span: it is a value without keys.
                Err(_) if entries.is_empty() => return Ok(Node::Leaf),
                Err(error) => return Err(error),
            };
            entries.push((key, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Table(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<Spanned<Node>>()? {
            elements.push(element);
        }
        Ok(Node::Array(elements))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Node, A::Error> {
        // toml hands no enums to `deserialize_any`; read one as a value without keys.
        let (IgnoredAny, _) = data.variant::<IgnoredAny>()?;
        Ok(Node::Leaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"data_dir = "/var/lib/spooler"

[store]
provider = "embedded"
config = { path = "/var/lib/spooler/store.sqlite" }

[[transport]]
provider = "smtp"
name = "smarthost"
config = { host = "mail.example.com", tls = "sometimes" }

[[transport]]
provider = "directory"

[transport.config]
path = "/var/spool/fax"
address_type = 7

[[hook]]
provider = "rules"
config = { rule = [
    { field = "subject", contains = "invoice", action = "move", folder = "Invoices" },
    { field = "subject", contains = "spam", action = "jump" },
] }
"#;

    fn tables() -> ProviderTables {
        provider_tables(
            Path::new("/etc/spooler.toml"),
            PROFILE,
            |key, index| match (key, index) {
                ("transport", 0) => "smarthost".into(),
                ("transport", 1) => "directory".into(),
                ("store", _) => "embedded".into(),
                _ => "rules".into(),
            },
        )
    }

    #[test]
    fn each_provider_table_is_found_with_its_config_line() {
        let tables = tables();
        let store = tables.store.expect("the store table");
        assert_eq!(store.table, "[store] \"embedded\"");
        assert_eq!(store.line, 5);
        assert_eq!(tables.transports.len(), 2);
        assert_eq!(tables.transports[0].table, "[[transport]] \"smarthost\"");
        assert_eq!(tables.transports[0].line, 10);
        assert_eq!(
            tables.transports[1].line, 15,
            "the [transport.config] header"
        );
        assert!(tables.preprocessors.is_empty());
        assert_eq!(tables.hooks.len(), 1);
    }

    #[test]
    fn a_key_of_an_inline_table_points_at_the_operators_line() {
        let tables = tables();
        let error = provider_abi::config::from_toml::<Smtp>(
            "smarthost",
            &toml::to_string(&table(PROFILE, "transport", 0)).unwrap(),
        )
        .err()
        .expect("refused");
        assert!(error.message().contains("at line"), "{}", error.message());
        assert_eq!(
            tables.transports[0].explain("smarthost", error.message()),
            "/etc/spooler.toml:10: key `tls` of [[transport]] \"smarthost\": unknown variant \
             `sometimes`, expected `starttls` or `none`"
        );
    }

    #[test]
    fn a_key_of_a_table_and_an_element_of_an_array_point_at_theirs() {
        let tables = tables();
        let fax = &tables.transports[1];
        assert_eq!(
            fax.explain(
                "directory",
                "instance \"directory\": key address_type at line 2: invalid type: integer \
                 `7`, expected a string"
            ),
            "/etc/spooler.toml:17: key `address_type` of [[transport]] \"directory\": invalid \
             type: integer `7`, expected a string"
        );
        let rules = &tables.hooks[0];
        assert_eq!(
            rules.explain(
                "rules",
                "instance \"rules\": key rule[1].action at line 9: unknown variant `jump`"
            ),
            "/etc/spooler.toml:23: key `rule[1].action` of [[hook]] \"rules\": unknown \
             variant `jump`"
        );
    }

    #[test]
    fn a_key_not_in_the_file_points_at_what_holds_it() {
        let tables = tables();
        let smarthost = &tables.transports[0];
        assert_eq!(
            smarthost.explain(
                "smarthost",
                "instance \"smarthost\": key ca_file: cannot read /etc/ca.pem"
            ),
            "/etc/spooler.toml:10: key `ca_file` of [[transport]] \"smarthost\": cannot read \
             /etc/ca.pem"
        );
        assert_eq!(
            tables.hooks[0].explain(
                "rules",
                "instance \"rules\": key rule[0].folder.name: not a folder"
            ),
            "/etc/spooler.toml:22: key `rule[0].folder.name` of [[hook]] \"rules\": not a folder"
        );
    }

    #[test]
    fn an_error_about_the_whole_table_points_at_its_config() {
        let tables = tables();
        let smarthost = &tables.transports[0];
        assert_eq!(
            smarthost.explain(
                "smarthost",
                "instance \"smarthost\": at line 1: missing field `host`"
            ),
            "/etc/spooler.toml:10: [[transport]] \"smarthost\": missing field `host`"
        );
        assert_eq!(
            smarthost.explain("smarthost", "instance \"smarthost\": missing field `host`"),
            "/etc/spooler.toml:10: [[transport]] \"smarthost\": missing field `host`"
        );
        assert_eq!(
            smarthost.explain("smarthost", "the server said no"),
            "/etc/spooler.toml:10: [[transport]] \"smarthost\": the server said no",
            "another wording is kept whole"
        );
    }

    #[test]
    fn a_table_without_config_points_at_its_header_and_odd_values_read() {
        let text = "[[transport]]\nprovider = \"pop3\"\n\n[[transport]]\nprovider = \"x\"\nconfig = { when = 1979-05-27T07:32:00Z, ratio = 0.5 }\n";
        let tables = provider_tables(Path::new("p.toml"), text, |_, index| index.to_string());
        assert_eq!(tables.transports[0].line, 1);
        assert_eq!(tables.transports[1].line, 6);
        assert_eq!(tables.transports[1].line_of("ratio"), Some(6));
    }

    #[test]
    fn a_text_that_does_not_read_gives_no_tables() {
        let tables = provider_tables(Path::new("p.toml"), "[[transport]\n", |_, _| String::new());
        assert!(tables.transports.is_empty() && tables.store.is_none());
    }

    /// The `config` table of the `index`th `key` table in `text`.
    fn table(text: &str, key: &str, index: usize) -> toml::Table {
        let profile: toml::Table = toml::from_str(text).unwrap();
        profile[key][index]["config"].as_table().unwrap().clone()
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Smtp {
        #[serde(rename = "host")]
        _host: String,
        #[serde(rename = "tls")]
        _tls: Tls,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Tls {
        Starttls,
        None,
    }
}
