//! The host's layers point down: each top-level module of `spooler-host/src` may use the
//! modules listed below it in `lib.rs` and never one above, so that a reader can learn the
//! host bottom up and a change in a front end cannot break the queue. This test reads every
//! `crate::` path in the sources (outside comments) and fails on an arrow that points up,
//! naming the file, the line and the two layers.

use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom up, as `lib.rs`'s first doc comment lists them.
const LAYERS: [&str; 12] = [
    "base",
    "observe",
    "config",
    "providers",
    "store",
    "protocol",
    "intake",
    "inbound",
    "queue",
    "front",
    "daemon",
    "cli",
];

/// Whether layer `from` may use layer `to`: only one below it, and beyond that rule, the
/// front ends are started by the daemon alone, and the CLI runs in a process of its own: it
/// uses neither the daemon nor a front end, and only `main.rs` uses it.
fn may_use(from: &str, to: &str) -> bool {
    let rank = |layer: &str| LAYERS.iter().position(|l| *l == layer);
    match (rank(from), rank(to)) {
        _ if to == "front" => from == "daemon",
        _ if to == "cli" => false,
        _ if from == "cli" => to != "daemon",
        (Some(from), Some(to)) => to < from,
        _ => false,
    }
}

fn sources(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(folder).expect("the source folder reads") {
        let path = entry.expect("a folder entry reads").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The layer a source file belongs to (its top-level folder or file under `src`), or `None`
/// for the crate root, `main.rs` and test-only code (`testing.rs`, `fuzz.rs`, and a module's
/// `tests.rs` or `tests/`), which may use any layer.
fn layer_of(source: &Path, root: &Path) -> Option<String> {
    let relative = source.strip_prefix(root).ok()?;
    let is_test = relative
        .components()
        .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs");
    if is_test {
        return None;
    }
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    LAYERS.contains(&name).then(|| name.to_owned())
}

/// The second-level module a path names inside the front ends (`control`, `smtpd`).
fn front_end(path: &str) -> Option<&str> {
    path.strip_prefix("front::")?.split("::").next()
}

#[test]
fn no_layer_uses_one_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let Some(layer) = layer_of(file, &root) else {
            continue;
        };
        let text = fs::read_to_string(file).expect("a source file reads");
        let own_front_end = file
            .strip_prefix(root.join("front"))
            .ok()
            .and_then(|rest| rest.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .map(|name| name.trim_end_matches(".rs").to_owned());
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let path = &line[at + "crate::".len()..];
                let target: String = path
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let crossing_front_ends = layer == "front"
                    && front_end(path).is_some_and(|to| Some(to) != own_front_end.as_deref());
                let allowed = target == layer && !crossing_front_ends
                    || target != layer && may_use(&layer, &target);
                if !allowed {
                    upward.push(format!(
                        "{}:{}: `{layer}` uses `{}`",
                        file.strip_prefix(&root).unwrap_or(file).display(),
                        number + 1,
                        path.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                            .next()
                            .unwrap_or(path)
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "arrows that point up (a layer may use only those below it in lib.rs):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layers_are_those_lib_rs_lists_in_order() {
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs reads");
    let listed: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//! - [`"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert_eq!(
        listed, LAYERS,
        "lib.rs's list and this test must name the same layers"
    );
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';'))
        .collect();
    declared.sort_unstable();
    let mut layers = LAYERS.to_vec();
    layers.sort_unstable();
    assert_eq!(declared, layers, "every module of lib.rs is a layer");
}
