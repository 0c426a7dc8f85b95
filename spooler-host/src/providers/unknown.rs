//! The answer to a profile naming a provider the providers folder does not offer: the folder
//! searched, the names of that kind it does offer, the nearest one, and the command that
//! lists the folder. A first profile often names the library (`transport-smtp`) instead of
//! its provider (`smtp`), or misspells one, and the operator should not have to guess which.

use std::path::Path;

use provider_abi::ProviderKind;

use crate::providers::loader::ProviderFolder;

/// One provider the folder offers.
struct Offered<'a> {
    kind: ProviderKind,
    name: &'a str,
    library: &'a str,
}

/// Why the profile's provider `name` of `kind` cannot be had from `folder`, and what can.
pub fn no_such_provider(folder: &ProviderFolder, kind: ProviderKind, name: &str) -> String {
    let offered: Vec<Offered<'_>> = folder
        .libraries()
        .flat_map(|library| {
            library.providers().map(|(kind, info)| Offered {
                kind,
                name: info.name.as_str(),
                library: library.manifest.library.as_str(),
            })
        })
        .collect();
    explain(&folder.path, &offered, kind, name)
}

fn explain(folder: &Path, offered: &[Offered<'_>], kind: ProviderKind, name: &str) -> String {
    let folder = folder.display();
    let mut text = format!("there is no {kind} provider `{name}` in the providers folder {folder}");
    if let Some(nearest) = nearest(offered, kind, name) {
        text.push_str(&format!("; did you mean `{}`", nearest.name));
        if nearest.library == name {
            text.push_str(&format!(" (`{name}` is the library that offers it)"));
        }
        text.push('?');
    } else if let Some(other) = offered.iter().find(|o| o.name == name) {
        text.push_str(&format!(
            "; `{name}` is a {} provider, not a {kind} provider.",
            other.kind
        ));
    } else {
        text.push('.');
    }
    let names: Vec<String> = offered
        .iter()
        .filter(|o| o.kind == kind)
        .map(|o| format!("`{}`", o.name))
        .collect();
    if names.is_empty() {
        text.push_str(&format!(" It offers no {kind} provider."));
    } else {
        text.push_str(&format!(
            " The {kind} providers there: {}.",
            names.join(", ")
        ));
    }
    text.push_str(&format!(
        " `spooler-host providers --providers {folder}` lists every library in the folder, \
         and why any was refused."
    ));
    text
}

/// The provider of `kind` whose name is nearest `name`, if one is near enough to be what
/// was meant: its library's name, or a name a letter or two away, with or without the kind
/// in front (`transport-smtp`, `smpt`, `distlist` all mean a provider that exists).
fn nearest<'a, 'o>(
    offered: &'o [Offered<'a>],
    kind: ProviderKind,
    name: &str,
) -> Option<&'o Offered<'a>> {
    let prefix = format!("{kind}-");
    let bare = |text: &'a str| text.strip_prefix(prefix.as_str()).unwrap_or(text);
    let wanted = name.strip_prefix(prefix.as_str()).unwrap_or(name);
    offered
        .iter()
        .filter(|o| o.kind == kind)
        .map(|o| {
            let distance = [o.name, o.library, bare(o.library)]
                .into_iter()
                .map(|candidate| distance(wanted, candidate).min(distance(name, candidate)))
                .min()
                .unwrap_or(usize::MAX);
            (distance, o)
        })
        .filter(|(distance, o)| *distance <= (wanted.len().min(o.name.len()) / 3).max(1))
        .min_by_key(|(distance, o)| (*distance, o.name))
        .map(|(_, o)| o)
}

/// The edit distance between `a` and `b`, a swap of two neighbouring letters counting as one
/// edit (the optimal string alignment distance): `smpt` is one from `smtp`.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the table: two back (for swaps), the last, and the one being filled.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        std::mem::swap(&mut before, &mut last);
        std::mem::swap(&mut last, &mut row);
    }
    last[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLED: [Offered<'static>; 4] = [
        Offered {
            kind: ProviderKind::Transport,
            name: "directory",
            library: "transport-directory",
        },
        Offered {
            kind: ProviderKind::Transport,
            name: "smtp",
            library: "transport-smtp",
        },
        Offered {
            kind: ProviderKind::Preprocessor,
            name: "distribution-lists",
            library: "preprocessor-distlist",
        },
        Offered {
            kind: ProviderKind::Hook,
            name: "rules",
            library: "hook-rules",
        },
    ];

    fn said(kind: ProviderKind, name: &str) -> String {
        explain(Path::new("/usr/lib/spooler"), &BUNDLED, kind, name)
    }

    #[test]
    fn the_librarys_name_is_answered_with_its_provider_the_folder_and_the_command() {
        assert_eq!(
            said(ProviderKind::Transport, "transport-smtp"),
            "there is no transport provider `transport-smtp` in the providers folder \
             /usr/lib/spooler; did you mean `smtp` (`transport-smtp` is the library that \
             offers it)? The transport providers there: `directory`, `smtp`. `spooler-host \
             providers --providers /usr/lib/spooler` lists every library in the folder, and \
             why any was refused."
        );
    }

    #[test]
    fn a_misspelt_name_gets_the_nearest_and_a_far_one_none() {
        let nearest = |kind, name| nearest(&BUNDLED, kind, name).map(|o| o.name);
        assert_eq!(nearest(ProviderKind::Transport, "smpt"), Some("smtp"));
        assert_eq!(
            nearest(ProviderKind::Transport, "directroy"),
            Some("directory")
        );
        assert_eq!(
            nearest(ProviderKind::Preprocessor, "distlist"),
            Some("distribution-lists")
        );
        assert_eq!(
            nearest(ProviderKind::Preprocessor, "distribution-list"),
            Some("distribution-lists")
        );
        assert_eq!(nearest(ProviderKind::Hook, "rule"), Some("rules"));
        assert_eq!(nearest(ProviderKind::Transport, "pop3"), None);
        assert_eq!(nearest(ProviderKind::Transport, "fax"), None);
        assert_eq!(
            nearest(ProviderKind::Transport, "rules"),
            None,
            "another kind's"
        );
    }

    #[test]
    fn another_kinds_provider_and_a_kind_the_folder_lacks_are_said() {
        let hook_as_transport = said(ProviderKind::Transport, "rules");
        assert!(
            hook_as_transport.contains(
                "; `rules` is a hook provider, not a transport provider. The transport \
                 providers there: `directory`, `smtp`."
            ),
            "{hook_as_transport}"
        );
        let store = said(ProviderKind::Store, "postgres");
        assert!(
            store.contains("/usr/lib/spooler. It offers no store provider. `spooler-host"),
            "{store}"
        );
    }

    #[test]
    fn the_distance_counts_a_swap_once() {
        assert_eq!(distance("smtp", "smtp"), 0);
        assert_eq!(distance("smpt", "smtp"), 1);
        assert_eq!(distance("", "pop3"), 4);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ruleš", "rules"), 1);
    }
}
