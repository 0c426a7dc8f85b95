//! What the integration tests share, and the provider crates' own tests and the benchmarks
//! use too: the built host and provider libraries, a site to run them in, the host run as a
//! user runs it, the real servers it talks to, a plain SMTP client, a headless Chromium for
//! the dashboard, and the crash, full-disk and TLS helpers.
//!
//! Each module owns one of these; the names are re-exported here, so that a test says
//! `spooler_tests::{Host, Site, SmtpSink}` wherever they live.

mod artifacts;
mod bulk;
mod chromium;
pub mod crash;
mod disk;
mod host;
mod http;
mod ports;
mod servers;
mod site;
mod smtp_client;
mod tls;
mod wait;

pub use artifacts::{
    build_folder, host_binary, library, library_at_revision, library_file_name, BUNDLED, FIXTURES,
};
pub use bulk::{files_per_message, recorded_deliveries, submit_many, submit_numbered};
pub use chromium::{chromium_program, Chromium, Page};
pub use disk::SmallDisk;
pub use host::{run_host, run_host_with_input, Finished, Host, Watcher};
pub use http::{http, http_get, http_raw, EventStream, HttpAnswer, Receiver, ServerEvent};
pub use ports::free_port;
pub use servers::{
    real_server, Dnsmasq, Dovecot, PolicyServer, Postfix, Postgres, Prometheus, SmtpSink, Zone,
};
pub use site::{set_mode, ProviderFolder, Site};
pub use smtp_client::{connect_from, SmtpClient};
pub use tls::Certificates;
pub use wait::{wait_until, PROMPTLY};
