//! The distribution-list preprocessor: replaces a recipient that names a list by the list's
//! members, before routing.
//!
//! Lists are defined in its configuration and may contain other lists. A list reached again
//! while it is being expanded (a loop) is skipped with a warning, so expansion always ends;
//! an address already among the recipients is not added twice. Members inherit the list's
//! recipient kind, so the members of a Bcc list stay Bcc.
//!
//! ```toml
//! [lists]
//! "LOCAL:team" = ["SMTP:ann@example.com", "LOCAL:ops"]
//! "LOCAL:ops" = ["FAX:+4930123456"]
//! ```

use std::collections::{BTreeMap, HashSet};

use provider_abi::{
    export_library, Address, Changes, Library, MessageRef, OpenContext, Preprocessed, Preprocessor,
    ProviderError, Recipient, RecipientKind,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
}

/// The preprocessor instance: every list with its members.
pub struct DistributionLists {
    lists: BTreeMap<Address, Vec<Address>>,
}

impl DistributionLists {
    /// Opens it from its configuration table; every address must parse.
    pub fn open(context: &OpenContext) -> Result<Self, ProviderError> {
        let config: Config = context.config_as()?;
        let mut lists = BTreeMap::new();
        for (list, members) in config.lists {
            let bad = |error: provider_abi::AddressError| {
                context.config_error(&format!("lists.\"{list}\""), error)
            };
            let list_address = Address::parse(&list).map_err(bad)?;
            let members = members
                .iter()
                .map(|member| Address::parse(member))
                .collect::<Result<Vec<_>, _>>()
                .map_err(bad)?;
            lists.insert(list_address, members);
        }
        Ok(DistributionLists { lists })
    }

    /// Adds the members of `list` (recursively) to `out`, skipping loops and duplicates.
    fn expand(
        &self,
        list: &Address,
        kind: RecipientKind,
        path: &mut Vec<Address>,
        present: &mut HashSet<Address>,
        out: &mut Vec<Recipient>,
    ) {
        path.push(list.clone());
        for member in &self.lists[list] {
            if path.contains(member) {
                let chain: Vec<String> = path.iter().map(ToString::to_string).collect();
                log::warn!(
                    "distribution list loop: {} -> {member}; not expanding {member} again",
                    chain.join(" -> ")
                );
            } else if self.lists.contains_key(member) {
                self.expand(member, kind, path, present, out);
            } else if present.insert(member.clone()) {
                out.push(Recipient::new(member.clone(), kind));
            }
        }
        path.pop();
    }
}

impl Preprocessor for DistributionLists {
    fn address_types(&self) -> Vec<String> {
        let types: HashSet<&str> = self.lists.keys().map(Address::address_type).collect();
        types.into_iter().map(str::to_owned).collect()
    }

    fn process(&mut self, message: MessageRef<'_>) -> Result<Preprocessed, ProviderError> {
        let recipients = &message.envelope.recipients;
        let mut present: HashSet<Address> = recipients.iter().map(|r| r.address.clone()).collect();
        let mut changes = Changes::default();
        let mut added = Vec::new();
        for recipient in recipients.iter().filter(|r| !r.status.is_final()) {
            if self.lists.contains_key(&recipient.address) {
                self.expand(
                    &recipient.address,
                    recipient.kind,
                    &mut Vec::new(),
                    &mut present,
                    &mut added,
                );
                changes.remove_recipients.push(recipient.address.clone());
            }
        }
        if !changes.remove_recipients.is_empty() {
            log::info!(
                "message {}: expanded {} list(s) into {} recipient(s)",
                message.envelope.id,
                changes.remove_recipients.len(),
                added.len()
            );
        }
        changes.add_recipients = added.into();
        Ok(Preprocessed::Accept(changes))
    }
}

fn library() -> Library {
    Library::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")).preprocessor(
        "distribution-lists",
        &[],
        DistributionLists::open,
    )
}

export_library!(library);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_abi::ErrorKind;
    use provider_testkit::{check_preprocessor, message, open_preprocessor, process};

    const LISTS: &str = r#"
[lists]
"LOCAL:team" = ["SMTP:ann@example.com", "LOCAL:ops", "LOCAL:team"]
"LOCAL:ops" = ["FAX:+4930123456", "SMTP:ann@example.com"]
"#;

    #[test]
    fn keeps_the_hosts_preprocessor_contract() {
        check_preprocessor(
            library,
            "distribution-lists",
            LISTS,
            &["LOCAL:team", "LOCAL:alice"],
        )
        .unwrap();
    }

    #[test]
    fn a_list_is_replaced_by_its_members_once_each_despite_a_loop() {
        let (mut lists, _) = open_preprocessor(library, "distribution-lists", LISTS).unwrap();
        let message = message(&["LOCAL:team", "LOCAL:alice"], "Subject: hi\r\n\r\nx");
        let Preprocessed::Accept(changes) = process(&mut lists, &message).unwrap() else {
            panic!("accepted");
        };
        let added: Vec<String> = changes
            .add_recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        assert_eq!(added, ["SMTP:ann@example.com", "FAX:+4930123456"]);
        assert_eq!(
            changes.remove_recipients.as_slice(),
            [Address::parse("LOCAL:team").unwrap()]
        );
    }

    #[test]
    fn a_wrong_list_is_refused_naming_its_key() {
        let refused = |config: &str| {
            let error = open_preprocessor(library, "distribution-lists", config)
                .err()
                .expect("refused");
            assert_eq!(error.kind(), ErrorKind::Configuration, "{error}");
            error.message().to_owned()
        };
        let member = refused("[lists]\n\"LOCAL:team\" = [\"nobody\"]\n");
        assert!(
            member.starts_with(
                "instance \"distribution-lists-test\": key lists.\"LOCAL:team\": `nobody` is not a recipient address"
            ),
            "{member}"
        );
        let members = refused("[lists]\n\"LOCAL:team\" = \"SMTP:ann@example.com\"\n");
        assert!(
            members.contains("key lists.LOCAL:team at line 2: invalid type: string"),
            "{members}"
        );
        let misspelt = refused("[list]\n");
        assert!(
            misspelt.contains("unknown field `list`, expected `lists`"),
            "{misspelt}"
        );
    }
}
