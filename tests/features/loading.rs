//! Loading providers, as an operator meets it: `spooler-host providers` on a folder of built
//! libraries, good and bad, a provider's log lines in the host's log, and a library dropped
//! into the folder of a running host, loaded on SIGHUP.

use std::time::Duration;

use spooler_tests::{
    library_file_name, run_host, set_mode, wait_until, Finished, Host, ProviderFolder, Site,
    BUNDLED, PROMPTLY,
};

use crate::common::PICKUP;

const LIMIT: Duration = Duration::from_secs(60);

fn list(folder: &ProviderFolder, extra: &[&str]) -> Finished {
    let path = folder.path().to_string_lossy().into_owned();
    let mut args = vec!["providers", "--providers", path.as_str()];
    args.extend_from_slice(extra);
    let finished = run_host(&args, &[], LIMIT);
    assert_eq!(finished.code, Some(0), "stderr:\n{}", finished.stderr);
    finished
}

/// The line about `file_name` in a listing.
fn status_of<'a>(finished: &'a Finished, folder: &ProviderFolder, file_name: &str) -> &'a str {
    let prefix = format!("{}: ", folder.path().join(file_name).display());
    finished.line_starting(&prefix)[prefix.len()..].trim_end()
}

#[test]
fn every_bundled_provider_is_listed_with_its_kind_and_address_types() {
    let folder = ProviderFolder::with(&BUNDLED);
    let listing = list(&folder, &[]);
    for (package, kind, name, types) in [
        ("store-embedded", "store", "embedded", "[LOCAL]"),
        ("store-postgres", "store", "postgres", "[LOCAL]"),
        ("transport-directory", "transport", "directory", "[FILE]"),
        ("transport-local", "transport", "local", "[LOCAL]"),
        (
            "preprocessor-distlist",
            "preprocessor",
            "distribution-lists",
            "[]",
        ),
        ("preprocessor-dkim", "preprocessor", "dkim", "[]"),
        ("hook-rules", "hook", "rules", "[]"),
    ] {
        let status = status_of(&listing, &folder, &library_file_name(package));
        assert!(
            status.starts_with(&format!("loaded {package} 0.1.0 (provider-abi 1.")),
            "{status}"
        );
        let provider_line = listing
            .stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for provider {name}:\n{}", listing.stdout));
        let words: Vec<&str> = provider_line.split_whitespace().collect();
        assert_eq!(words, [kind, name, types], "{provider_line}");
    }
}

#[test]
fn each_bad_file_gets_its_own_message_and_every_good_one_loads() {
    let folder = ProviderFolder::with(&BUNDLED);
    folder.add_file(
        "random.so",
        &[0x3a, 0x91, 0x07, 0xee, 0x12, 0x5c, 0xd0, 0x44].repeat(512),
    );
    folder.add_file("readme.so", b"This is a text file, not a library.\n");
    folder.add_file("notes.txt", b"Providers go here.\n");
    for fixture in [
        "fixture-incompatible-abi",
        "fixture-layout-mismatch",
        "fixture-panicking",
        "fixture-no-root-module",
    ] {
        folder.add_library(fixture);
    }
    // An operator dropped a second copy of the directory transport in.
    folder.add_library_as("transport-directory", "zz-old-directory-transport.so");
    let writable = folder.add_library_as("hook-rules", "writable-by-others.so");
    set_mode(&writable, 0o646);

    let listing = list(&folder, &["--all"]);
    let status = |file: &str| status_of(&listing, &folder, file).to_owned();

    for package in BUNDLED {
        assert!(
            status(&library_file_name(package)).starts_with("loaded "),
            "{package}"
        );
    }
    let random = status("random.so");
    assert!(
        random.starts_with("refused: not a loadable library: "),
        "{random}"
    );
    let text = status("readme.so");
    assert!(
        text.starts_with("refused: not a loadable library: "),
        "{text}"
    );
    assert_ne!(
        random, text,
        "the platform loader says what is wrong with each"
    );
    assert_eq!(status("notes.txt"), "skipped: not a shared library (.so)");

    let incompatible = status(&library_file_name("fixture-incompatible-abi"));
    assert!(
        incompatible.starts_with(
            "refused: incompatible ABI: the library was built against provider-abi 2.0.0, \
             this host uses provider-abi 1."
        ),
        "{incompatible}"
    );
    let layout = status(&library_file_name("fixture-layout-mismatch"));
    assert!(layout.starts_with("refused: layout mismatch: "), "{layout}");
    assert_eq!(
        status(&library_file_name("fixture-panicking")),
        "refused: the library constructor panicked: the fixture's constructor gives up"
    );
    assert!(
        status(&library_file_name("fixture-no-root-module")).starts_with(
            "refused: a shared library, but not a spooler provider library: \
         it does not export the provider-abi root module"
        )
    );
    assert_eq!(
        status("zz-old-directory-transport.so"),
        format!(
            "refused: duplicate provider: `directory` is already offered by {}; provider names \
             must be unique, so remove one of the two libraries",
            folder
                .path()
                .join(library_file_name("transport-directory"))
                .display()
        )
    );
    assert_eq!(
        status("writable-by-others.so"),
        format!(
            "refused: unsafe permissions: the file {} is writable by others (mode 646); \
             fix it with `chmod go-w {}`",
            writable.display(),
            writable.display()
        )
    );
}

#[test]
fn a_folder_writable_by_others_refuses_every_library_in_it() {
    let folder = ProviderFolder::with(&["transport-directory"]);
    set_mode(folder.path(), 0o777);
    let listing = list(&folder, &[]);
    let status = status_of(&listing, &folder, &library_file_name("transport-directory"));
    assert_eq!(
        status,
        format!(
            "refused: unsafe permissions: the providers folder {} is writable by group and \
             others (mode 777); fix it with `chmod go-w {}`",
            folder.path().display(),
            folder.path().display()
        )
    );
}

#[test]
fn an_unreadable_folder_is_the_only_failure() {
    let folder = ProviderFolder::new();
    let missing = folder.path().join("no-such-folder");
    let finished = run_host(
        &["providers", "--providers", &missing.to_string_lossy()],
        &[],
        LIMIT,
    );
    assert_eq!(finished.code, Some(1));
    assert!(
        finished.stderr.contains(&format!(
            "cannot read the providers folder {}: No such file or directory",
            missing.display()
        )),
        "{}",
        finished.stderr
    );
}

#[test]
fn a_providers_log_lines_appear_in_the_hosts_log_filtered_by_rust_log() {
    let folder = ProviderFolder::with(&["fixture-chatty"]);
    let path = folder.path().to_string_lossy().into_owned();
    let args = ["providers", "--providers", path.as_str()];
    let info_line = "chatty fixture: hello from inside the provider library";
    let debug_line = "chatty fixture: a debug line";

    let at_info = run_host(&args, &[("RUST_LOG", "info")], LIMIT);
    assert!(at_info.stderr.contains(info_line), "{}", at_info.stderr);
    assert!(
        at_info.stderr.contains("fixture_chatty"),
        "the target names the provider"
    );
    assert!(!at_info.stderr.contains(debug_line), "{}", at_info.stderr);

    let at_debug = run_host(&args, &[("RUST_LOG", "warn,fixture_chatty=debug")], LIMIT);
    assert!(at_debug.stderr.contains(info_line), "{}", at_debug.stderr);
    assert!(at_debug.stderr.contains(debug_line), "{}", at_debug.stderr);

    let off = run_host(&args, &[("RUST_LOG", "off")], LIMIT);
    assert!(!off.stderr.contains("chatty"), "{}", off.stderr);
}

#[test]
fn a_provider_dropped_into_the_folder_after_start_is_loaded_on_sighup() {
    let site = Site::with_providers(&["store-embedded"]);
    let config = site.write_config(&PICKUP.replace("max_delay = \"1s\"", "max_delay = \"1h\""));
    let host = Host::start(&config, "host.log");
    let id = host.submit(
        &["FILE:bob"],
        "Subject: waiting for a transport\r\n\r\nHi.\r\n",
    );
    wait_until(
        PROMPTLY,
        "the recipient waits for the missing transport",
        || {
            host.show(&id)["recipients"][0]["last_answer"]
                .as_str()
                .unwrap_or_default()
                .contains("could not be started")
        },
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status.contains("there is no transport provider `directory` in the providers folder"),
        "{status}"
    );

    site.providers().add_library("transport-directory");
    host.signal(libc::SIGHUP);
    wait_until(
        PROMPTLY,
        "the new transport delivers the waiting mail",
        || site.delivered_files("files").len() == 1,
    );
    let status = host.command(&["status"]).stdout;
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("files") && l.contains("online")),
        "{status}"
    );
}

/// The line of the profile `config` that holds `text`, counted from 1.
fn line_holding(config: &std::path::Path, text: &str) -> usize {
    let profile = std::fs::read_to_string(config).expect("the profile reads");
    profile
        .lines()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("no line holds {text:?} in:\n{profile}"))
        + 1
}

/// Waits until the host's log holds `text`; the log.
fn logged(host: &Host, text: &str) -> String {
    wait_until(PROMPTLY, text, || host.log().contains(text));
    host.log()
}

#[test]
fn a_providers_config_error_names_the_profile_and_the_operators_line() {
    let site = Site::with_providers(&["store-embedded", "transport-directory"]);
    let config = site.write_config(
        r#"
# two transports, their tables written two ways
[[transport]]
provider = "directory"
name = "inline"
config = { path = "{site}/inline", colour = "red" }

[[transport]]
provider = "directory"
name = "table"

[transport.config]
path = "{site}/table"

poll_interval_secs = "often"
"#,
    );
    let host = Host::start(&config, "host.log");
    let file = config.display();
    let inline = format!(
        "inline cannot be opened: {file}:{}: key `colour` of [[transport]] \"inline\": unknown \
         field `colour`",
        line_holding(&config, "colour")
    );
    let table = format!(
        "table cannot be opened: {file}:{}: key `poll_interval_secs` of [[transport]] \
         \"table\": invalid type: string \"often\"",
        line_holding(&config, "poll_interval_secs")
    );
    let log = logged(&host, &inline);
    assert!(!log.contains("at line"), "{log}");
    logged(&host, &table);
    let status = host.command(&["status"]).stdout;
    assert!(status.contains(&format!("{file}:")), "{status}");
}

#[test]
fn an_unknown_provider_name_gets_the_folder_the_names_the_nearest_and_the_command() {
    let site = Site::with_providers(&["store-embedded", "transport-directory", "transport-smtp"]);
    let config = site.write_config(
        "[[transport]]\nprovider = \"transport-smtp\"\nname = \"smarthost\"\nconfig = { host = \"localhost\" }\n",
    );
    let host = Host::start(&config, "host.log");
    let folder = site.providers().path().display().to_string();
    let said = format!(
        "smarthost: there is no transport provider `transport-smtp` in the providers folder \
         {folder}; did you mean `smtp` (`transport-smtp` is the library that offers it)? The \
         transport providers there: `directory`, `smtp`. `spooler-host providers --providers \
         {folder}` lists every library in the folder, and why any was refused."
    );
    let log = logged(&host, &said);
    assert!(
        log.contains("transport smarthost claims nothing: it did not start"),
        "{log}"
    );
    assert!(!log.contains("claims \n"), "{log}");
}

#[test]
fn an_unknown_store_name_stops_the_host_with_the_same_help() {
    let site = Site::with_providers(&["store-embedded", "transport-directory"]);
    let config = site.write_config("[store]\nprovider = \"embeded\"\n");
    let finished = run_host(&["run", "--config", &config.to_string_lossy()], &[], LIMIT);
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    let folder = site.providers().path().display().to_string();
    assert!(
        finished.stderr.contains(&format!(
            "there is no store provider `embeded` in the providers folder {folder}; did you \
             mean `embedded`? The store providers there: `embedded`. `spooler-host providers \
             --providers {folder}`"
        )),
        "{}",
        finished.stderr
    );
}
