//! Every file or folder that `docs/ARCHITECTURE.md` cites exists, so that the map a
//! newcomer reads first does not send them to a file that is gone.
//!
//! A cited path is a backquoted name with a `/` or a file extension (`queue/policy.rs`,
//! `tests/upgrade.rs`, `front/smtpd/`). It may be written from the repository's root, from
//! `spooler-host/src`, from a crate's `src`, or from a folder the text is about; so a path
//! counts as existing when some folder of the repository holds it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host's crate is in the repository")
        .to_path_buf()
}

/// Every folder of the repository, outside build output and version control.
fn folders(folder: &Path, found: &mut Vec<PathBuf>) {
    found.push(folder.to_path_buf());
    for entry in fs::read_dir(folder).expect("a folder reads").flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let skip = matches!(name.to_str(), Some("target" | ".git" | "corpus"));
        if path.is_dir() && !skip {
            folders(&path, found);
        }
    }
}

/// The paths a document cites: backquoted, relative, with a `/` or an extension of a file
/// kept in the repository; not a media type (`multipart/report`).
fn cited(text: &str) -> BTreeSet<String> {
    const EXTENSIONS: [&str; 4] = [".rs", ".md", ".toml", ".sh"];
    const MEDIA_TYPES: [&str; 4] = ["text/", "message/", "multipart/", "application/"];
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|quoted| quoted.trim_end_matches(['.', ',', ':']))
        .filter(|path| {
            !path.starts_with('/')
                && !path.contains("://")
                && !path.contains(char::is_whitespace)
                && !path.contains(['*', '<', '>', '{', '$', '='])
                && (path.contains('/') || EXTENSIONS.iter().any(|e| path.ends_with(e)))
                && !MEDIA_TYPES.iter().any(|t| path.starts_with(t))
                && path
                    .chars()
                    .all(|c| c.is_alphanumeric() || "._-/".contains(c))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_path_the_architecture_cites_exists() {
    let root = repository();
    let mut all = Vec::new();
    folders(&root, &mut all);
    let mut missing = Vec::new();
    for document in ["docs/ARCHITECTURE.md"] {
        let text = fs::read_to_string(root.join(document)).expect("the document reads");
        for path in cited(&text) {
            if !all.iter().any(|folder| folder.join(&path).exists()) {
                missing.push(format!("{document}: `{path}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited, but not in the repository (fix the text or the path):\n{}",
        missing.join("\n")
    );
}

#[test]
fn cited_paths_are_found_in_text() {
    let found = cited(
        "see `queue/policy.rs`, `front/smtpd/`, `bench/run`, not `/etc/x`, `a b` or \
         `multipart/report`.",
    );
    let expected: BTreeSet<String> = ["queue/policy.rs", "front/smtpd/", "bench/run"]
        .map(String::from)
        .into();
    assert_eq!(found, expected);
}
