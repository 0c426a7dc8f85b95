//! Local names and the alias table: what a recipient without a domain (`root`, `www-data`)
//! or of type `LOCAL` becomes at submission.
//!
//! The table has the format of `/etc/aliases` (aliases(5)): `name: target, target`, lines
//! that start with white space continue the previous one, `#` starts a comment. A target is
//! a local name, `user@domain`, `TYPE:address` (the spooler's own), or `:include:/file` (a
//! file of more targets). Names are expanded recursively; a name met again on its own path
//! (`root: root, admin@example.org`, or a loop) is delivered to its local mailbox, so a loop
//! never loses mail. Commands (`|program`) and files (`/path`) are refused with the line
//! named unless the profile allows them; then they become `PIPE:` and `FILE:` recipients,
//! for a transport that claims those types.
//!
//! A local name that no alias covers goes to the local store as `LOCAL:name` (the folder
//! `Local/name`), or, with `submission.myorigin`, to `name@myorigin` over SMTP.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::config::LocalNames;

/// How deep aliases may refer to aliases before the expansion stops with an error.
const MAX_DEPTH: usize = 32;

/// One recipient after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The address to deliver to, `TYPE:address`.
    pub address: String,
    /// The address the client gave, when the alias table changed it (an alias, not a plain
    /// qualification): reports name it as the original recipient.
    pub original: Option<String>,
}

/// One alias target, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A local name, `user@domain` or `TYPE:address`.
    Address(String),
    /// `:include:/file`.
    Include(PathBuf),
    /// `|command`.
    Command(String),
    /// `/path`.
    File(PathBuf),
}

/// A parsed alias file: the aliases and what was refused in it.
#[derive(Debug, Default, Clone)]
pub struct Table {
    aliases: HashMap<String, Vec<Target>>,
    /// Lines that could not be read, each naming the file and line.
    pub problems: Vec<String>,
}

impl Table {
    /// Reads an alias file. An unreadable file is an error; bad lines are `problems`.
    pub fn read(file: &Path) -> Result<Table, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("alias file {}: cannot read it: {e}", file.display()))?;
        Ok(Table::parse(&text, file))
    }

    /// Parses the text of an alias file named `file` (named in problems).
    pub fn parse(text: &str, file: &Path) -> Table {
        let mut table = Table::default();
        for (line, entry) in logical_lines(text) {
            let Some((name, targets)) = entry.split_once(':') else {
                table.problems.push(format!(
                    "{}:{line}: `{entry}` is not `name: target, …`",
                    file.display()
                ));
                continue;
            };
            let name = unquoted(name.trim()).to_ascii_lowercase();
            if name.is_empty() || name.contains(char::is_whitespace) || name.contains('@') {
                table.problems.push(format!(
                    "{}:{line}: `{name}` is not a local name",
                    file.display()
                ));
                continue;
            }
            let targets: Vec<Target> = split_targets(targets).map(parse_target).collect();
            if targets.is_empty() {
                table.problems.push(format!(
                    "{}:{line}: alias `{name}` has no target",
                    file.display()
                ));
                continue;
            }
            table.aliases.insert(name, targets);
        }
        table
    }

    /// How many aliases the table has.
    pub fn len(&self) -> usize {
        self.aliases.len()
    }

    /// Whether the table has no alias.
    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }
}

/// The alias table a running host uses: read at start, and read again when the file
/// changes (looked at on each submission: one `stat`), on SIGHUP (with the profile) and when
/// `sendmail -bi` asks.
#[derive(Debug)]
pub struct Aliases {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    names: LocalNames,
    /// The file's modification time when it was read.
    modified: Option<SystemTime>,
    table: Table,
}

impl Aliases {
    /// Reads the table the profile names; problems are logged, an unreadable file too (the
    /// table is then empty, so local names go to their local mailboxes).
    pub fn new(names: LocalNames) -> Aliases {
        let aliases = Aliases {
            state: Mutex::new(State {
                names: LocalNames::default(),
                modified: None,
                table: Table::default(),
            }),
        };
        aliases.configure(names);
        aliases
    }

    /// Takes the profile's settings (again) and reads the file.
    pub fn configure(&self, names: LocalNames) {
        self.state.lock().names = names;
        self.reload().ok();
    }

    /// Reads the file again: how many aliases it has and what it found wrong, for
    /// `sendmail -bi` to show. An unreadable file empties the table.
    pub fn reload(&self) -> Result<(usize, Vec<String>), String> {
        let mut state = self.state.lock();
        let Some(file) = state.names.aliases.clone() else {
            state.table = Table::default();
            return Ok((0, Vec::new()));
        };
        state.modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        match Table::read(&file) {
            Ok(table) => {
                for problem in &table.problems {
                    log::error!("{problem}; that line is ignored");
                }
                log::info!("alias file {}: {} alias(es)", file.display(), table.len());
                let answer = (table.len(), table.problems.clone());
                state.table = table;
                Ok(answer)
            }
            Err(error) => {
                log::error!("{error}; local names go to their local mailboxes");
                state.table = Table::default();
                Err(error)
            }
        }
    }

    /// Reads the file again if it changed since it was read.
    fn refresh(&self) {
        let file = {
            let state = self.state.lock();
            let Some(file) = state.names.aliases.clone() else {
                return;
            };
            let modified = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
            if state.modified == modified {
                return;
            }
            file
        };
        log::info!("alias file {} changed; reading it again", file.display());
        self.reload().ok();
    }

    /// What a submitted recipient becomes: itself when it is not a local name, else its
    /// expansion. The error says why an alias could not be expanded.
    pub fn expand(&self, recipient: &str) -> Result<Vec<Expanded>, String> {
        let Some(name) = local_name(recipient) else {
            return Ok(vec![Expanded {
                address: recipient.to_owned(),
                original: None,
            }]);
        };
        self.refresh();
        let state = self.state.lock();
        let mut found = BTreeSet::new();
        let mut path = Vec::new();
        expand_name(&state.table, &state.names, &name, &mut path, &mut found)?;
        let aliased = !(found.len() == 1 && found.contains(&qualify(&state.names, &name)));
        Ok(found
            .into_iter()
            .map(|address| Expanded {
                address,
                original: aliased.then(|| recipient.to_owned()),
            })
            .collect())
    }

    /// A sender given as a bare name, qualified as recipients are; any other as given.
    pub fn qualified_sender(&self, sender: &str) -> String {
        match local_name(sender) {
            Some(name) => qualify(&self.state.lock().names, &name),
            None => sender.to_owned(),
        }
    }
}

fn qualify(names: &LocalNames, name: &str) -> String {
    match &names.myorigin {
        Some(domain) => format!("SMTP:{name}@{domain}"),
        None => format!("LOCAL:{name}"),
    }
}

/// The local name in `root` or `LOCAL:root`, as written; none for any other address.
pub fn local_name(address: &str) -> Option<String> {
    let address = address.trim();
    let name = match address.split_once(':') {
        Some((kind, name)) if kind.eq_ignore_ascii_case("LOCAL") => name,
        Some(_) => return None,
        None if address.contains('@') || address.is_empty() => return None,
        None => address,
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    valid.then(|| name.to_owned())
}

fn expand_name(
    table: &Table,
    names: &LocalNames,
    name: &str,
    path: &mut Vec<String>,
    found: &mut BTreeSet<String>,
) -> Result<(), String> {
    // Aliases are looked up whatever the case; a name without one keeps its own.
    let key = name.to_ascii_lowercase();
    let Some(targets) = table.aliases.get(&key).filter(|_| !path.contains(&key)) else {
        // No alias, or met again on its own path: its local mailbox.
        found.insert(qualify(names, name));
        return Ok(());
    };
    if path.len() >= MAX_DEPTH {
        return Err(format!(
            "alias {} refers to aliases more than {MAX_DEPTH} deep",
            path[0]
        ));
    }
    path.push(key);
    let before = found.len();
    for target in targets {
        expand_target(table, names, target, path, found)?;
    }
    if found.len() == before && !targets.is_empty() {
        // Every target was refused (commands or files not allowed): keep the mail here.
        found.insert(qualify(names, name));
    }
    path.pop();
    Ok(())
}

fn expand_target(
    table: &Table,
    names: &LocalNames,
    target: &Target,
    path: &mut Vec<String>,
    found: &mut BTreeSet<String>,
) -> Result<(), String> {
    let alias = path[path.len() - 1].clone();
    match target {
        Target::Address(address) => match local_name(address) {
            Some(name) => expand_name(table, names, &name, path, found)?,
            None if address.contains(':') => {
                found.insert(address.clone());
            }
            None => {
                found.insert(format!("SMTP:{address}"));
            }
        },
        Target::Include(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                format!(
                    "alias {alias}: cannot read its include file {}: {e}",
                    file.display()
                )
            })?;
            for (_, line) in logical_lines(&text) {
                for target in split_targets(&line).map(parse_target) {
                    if matches!(target, Target::Include(_)) {
                        log::warn!(
                            "alias {alias}: {} includes another file; not followed",
                            file.display()
                        );
                        continue;
                    }
                    expand_target(table, names, &target, path, found)?;
                }
            }
        }
        Target::Command(command) if names.pipes_and_files => {
            found.insert(format!("PIPE:{command}"));
        }
        Target::File(file) if names.pipes_and_files => {
            found.insert(format!("FILE:{}", file.display()));
        }
        Target::Command(_) | Target::File(_) => log::warn!(
            "alias {alias}: {} refused: commands and files in aliases are off \
             (submission.alias_pipes_and_files)",
            describe(target)
        ),
    }
    Ok(())
}

fn describe(target: &Target) -> String {
    match target {
        Target::Address(address) => address.clone(),
        Target::Include(file) => format!(":include:{}", file.display()),
        Target::Command(command) => format!("the command `|{command}`"),
        Target::File(file) => format!("the file {}", file.display()),
    }
}

/// The file's logical lines with their first line numbers: comments and blank lines
/// dropped, continuation lines joined.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines: Vec<(usize, String)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match lines.last_mut() {
            Some((_, last)) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => lines.push((number + 1, line.to_owned())),
        }
    }
    lines
}

/// The comma-separated targets of a line; commas inside double quotes do not separate.
fn split_targets(text: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(str::trim).filter(|t| !t.is_empty())
}

fn unquoted(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
}

fn parse_target(text: &str) -> Target {
    let text = unquoted(text).trim();
    if let Some(file) = text.strip_prefix(":include:") {
        Target::Include(PathBuf::from(file.trim()))
    } else if let Some(command) = text.strip_prefix('|') {
        Target::Command(command.trim().to_owned())
    } else if text.starts_with('/') {
        Target::File(PathBuf::from(text))
    } else {
        Target::Address(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of `text`, in a folder that lives as long as the test.
    fn aliases(text: &str, myorigin: Option<&str>, pipes_and_files: bool) -> Aliases {
        let folder = tempfile::tempdir().unwrap().keep();
        let file = folder.join("aliases");
        std::fs::write(&file, text).unwrap();
        Aliases::new(LocalNames {
            aliases: Some(file),
            myorigin: myorigin.map(str::to_owned),
            pipes_and_files,
        })
    }

    fn addresses(aliases: &Aliases, recipient: &str) -> Vec<String> {
        aliases
            .expand(recipient)
            .unwrap()
            .into_iter()
            .map(|e| e.address)
            .collect()
    }

    #[test]
    fn bare_names_are_local_or_qualified() {
        let none = Aliases::new(LocalNames::default());
        assert_eq!(addresses(&none, "root"), ["LOCAL:root"]);
        assert_eq!(addresses(&none, "LOCAL:Www-Data"), ["LOCAL:Www-Data"]);
        assert_eq!(addresses(&none, "bob@example.net"), ["bob@example.net"]);
        assert_eq!(addresses(&none, "FAX:+4930"), ["FAX:+4930"]);
        let qualified = aliases("", Some("example.org"), false);
        assert_eq!(addresses(&qualified, "root"), ["SMTP:root@example.org"]);
        assert_eq!(none.expand("root").unwrap()[0].original, None);
    }

    #[test]
    fn aliases_expand_recursively_and_keep_the_original() {
        let table = "# comment\npostmaster: root\nroot: admin,\n  ops@example.org\n\
                     admin: admin, \"FAX:+4930 1\"\n";
        let aliases = aliases(table, None, false);
        assert_eq!(
            addresses(&aliases, "postmaster"),
            ["FAX:+4930 1", "LOCAL:admin", "SMTP:ops@example.org"]
        );
        let expanded = aliases.expand("POSTMASTER").unwrap();
        assert!(expanded
            .iter()
            .all(|e| e.original.as_deref() == Some("POSTMASTER")));
    }

    #[test]
    fn a_loop_ends_in_a_local_mailbox() {
        let aliases = aliases("a: b\nb: a, x@example.org\n", None, false);
        assert_eq!(addresses(&aliases, "a"), ["LOCAL:a", "SMTP:x@example.org"]);
    }

    #[test]
    fn commands_and_files_are_refused_unless_allowed() {
        let table = "root: |/usr/bin/procmail, /var/mail/root\n";
        assert_eq!(
            addresses(&aliases(table, None, false), "root"),
            ["LOCAL:root"]
        );
        assert_eq!(
            addresses(&aliases(table, None, true), "root"),
            ["FILE:/var/mail/root", "PIPE:/usr/bin/procmail"]
        );
    }

    #[test]
    fn include_files_are_read() {
        let folder = tempfile::tempdir().unwrap().keep();
        let list = folder.join("team");
        std::fs::write(&list, "ann@example.org\n# x\nbob@example.org, carol\n").unwrap();
        let aliases = aliases(&format!("team: :include:{}\n", list.display()), None, false);
        assert_eq!(
            addresses(&aliases, "team"),
            [
                "LOCAL:carol",
                "SMTP:ann@example.org",
                "SMTP:bob@example.org"
            ]
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let table = Table::parse(
            "no colon here\nok: root\nempty:\n",
            Path::new("/etc/aliases"),
        );
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.problems,
            [
                "/etc/aliases:1: `no colon here` is not `name: target, …`",
                "/etc/aliases:3: alias `empty` has no target"
            ]
        );
    }
}
