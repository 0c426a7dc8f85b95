//! The provider template (`examples/provider-template`), as a third party uses it: it builds
//! on its own, exactly as checked in (`--locked`), its tests pass, and the host loads the
//! library it makes and delivers through it.

use std::path::Path;
use std::process::Command;

use spooler_tests::{build_folder, wait_until, Host, Site, PROMPTLY};

use crate::common::one_at_a_time;

/// Runs cargo `args` on the template. It shares the workspace's target folder (its lock file
/// pins the same versions), so the dependencies it has in common are built once.
fn cargo_on_template(args: &[&str]) {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/provider-template");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .args(["--quiet", "--locked", "--manifest-path"])
        .arg(template.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", template_target())
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "cargo {args:?} on the provider template failed"
    );
}

fn template_target() -> &'static Path {
    build_folder()
        .parent()
        .expect("target/<profile> has a parent")
}

#[test]
fn the_provider_template_builds_as_checked_in_and_the_host_delivers_through_it() {
    let _alone = one_at_a_time();
    cargo_on_template(&["test"]);
    cargo_on_template(&["build"]);
    let library = template_target().join(format!(
        "debug/{}transport_mbox{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));

    let site = Site::new();
    site.providers().add_file(
        library.file_name().unwrap().to_str().unwrap(),
        &std::fs::read(&library).expect("the template's library"),
    );
    std::fs::create_dir_all(site.path("mbox")).unwrap();
    let config = site.write_config(
        "[[transport]]\nprovider = \"mbox\"\nconfig = { path = \"{site}/mbox\", accept = [\"alice\"] }\n",
    );
    let host = Host::start(&config, "host.log");
    assert!(
        host.log().contains("loaded transport-mbox 0.1.0"),
        "{}",
        host.log()
    );
    let id = host.submit(
        &["-f", "ann@example.com", "MBOX:alice"],
        "Subject: from the template\r\n\r\nFrom a template, with love.\r\n",
    );
    wait_until(PROMPTLY, "the message is delivered", || {
        host.show(&id)["folder"] == "Sent Items"
    });
    let mbox = std::fs::read_to_string(site.path("mbox/alice.mbox")).unwrap();
    assert!(mbox.starts_with("From ann@example.com "), "{mbox}");
    assert!(
        mbox.contains("Subject: from the template\n\n>From a template, with love.\n"),
        "{mbox}"
    );
}
