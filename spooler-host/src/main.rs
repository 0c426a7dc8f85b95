//! `spooler-host`: the spooler's command line. `run` starts the spooler; the other commands
//! talk to a running one over its control socket. Invoked as `sendmail`, it submits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use provider_abi::ProviderKind;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use spooler_host::base::paths;
use spooler_host::cli::client::{self, ClientError};
use spooler_host::cli::display::{as_json, as_table};
use spooler_host::cli::sendmail::modes::{self, Print};
use spooler_host::cli::sendmail::{self, exit, Mode};
use spooler_host::config::Profile;
use spooler_host::daemon::{logging, Spooler};
use spooler_host::protocol::{Request, Response};
use spooler_host::providers::isolation;
use spooler_host::providers::isolation::child::{self, RunnerArgs};
use spooler_host::providers::loader::{self, FileOutcome, ProviderFolder};
use spooler_host::store::watchers::MailEventKind;

#[derive(Parser)]
#[command(
    version,
    about = "A store-and-forward message spooler with provider libraries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the spooler's profile and data are.
#[derive(Args, Clone)]
struct Place {
    /// The profile (TOML) [default: $SPOOLER_CONFIG; else, unless --data-dir is given, /etc/spooler/spooler.toml; without any, the embedded store and no transports].
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The data folder (store, control socket) [default: the profile's, else $XDG_DATA_HOME/spooler]. Without --config, it also means: do not read the system's profile.
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

/// The profile file a command reads, and what made it that one.
struct ChosenProfile {
    file: PathBuf,
    because: &'static str,
}

impl Place {
    /// The profile file, in this order: `--config`; `$SPOOLER_CONFIG`; the system's
    /// ([`SYSTEM_PROFILE`], so that cron and mail programs invoking plain `sendmail` reach the
    /// system's spooler) unless `--data-dir` is given; else none, and the defaults apply.
    ///
    /// `--data-dir` alone skips the system's profile because it says "my own spooler, here":
    /// the README's quick start must not talk to a system service or take half of its profile
    /// on a machine that has one.
    fn chosen_profile(&self) -> Option<ChosenProfile> {
        if let Some(file) = &self.config {
            return Some(ChosenProfile {
                file: file.clone(),
                because: "--config",
            });
        }
        if let Some(file) = std::env::var_os("SPOOLER_CONFIG").filter(|v| !v.is_empty()) {
            return Some(ChosenProfile {
                file: file.into(),
                because: "$SPOOLER_CONFIG",
            });
        }
        let system = Path::new(SYSTEM_PROFILE);
        (self.data_dir.is_none() && system.exists()).then(|| ChosenProfile {
            file: system.to_path_buf(),
            because: "the system's profile",
        })
    }

    /// The profile [`Place::chosen_profile`] names, or the defaults.
    fn profile(&self) -> Result<Profile, String> {
        self.read(self.chosen_profile().as_ref())
    }

    /// The profile in `chosen`, or the defaults when none was.
    fn read(&self, chosen: Option<&ChosenProfile>) -> Result<Profile, String> {
        match chosen {
            Some(chosen) => {
                Profile::read(&chosen.file, self.data_dir.clone()).map_err(|e| e.to_string())
            }
            None => Ok(Profile::defaults(self.data_dir.clone())),
        }
    }

    /// One line for `run`'s log: which profile, why, and the data folder it ended with.
    fn describe(&self, chosen: Option<&ChosenProfile>, profile: &Profile) -> String {
        let data = profile.data_dir.display();
        match chosen {
            Some(chosen) => format!(
                "profile: {} ({}); data folder: {data}",
                chosen.file.display(),
                chosen.because
            ),
            None if self.data_dir.is_some() => format!(
                "profile: none, the defaults (--data-dir without --config does not read {SYSTEM_PROFILE}); data folder: {data}"
            ),
            None => format!(
                "profile: none, the defaults (no --config, no $SPOOLER_CONFIG, no {SYSTEM_PROFILE}); data folder: {data}"
            ),
        }
    }
}

/// Where an installed spooler's profile is (README, "Installing as a service").
const SYSTEM_PROFILE: &str = "/etc/spooler/spooler.toml";

#[derive(Subcommand)]
enum Command {
    /// Starts the spooler.
    Run {
        #[command(flatten)]
        place: Place,
        /// The providers folder [default: the profile's, or providers/ beside this executable, or its folder].
        #[arg(long, value_name = "DIR")]
        providers: Option<PathBuf>,
    },
    /// Loads every library in the providers folder and says what each file offers or why it
    /// was refused.
    Providers {
        /// The providers folder [default: providers/ beside this executable, or its folder].
        #[arg(long, value_name = "DIR")]
        providers: Option<PathBuf>,
        /// Also list the entries that are not provider libraries (other files, folders).
        #[arg(long)]
        all: bool,
    },
    /// Submits a message read from standard input (sendmail's options; see the README).
    Submit {
        #[command(flatten)]
        place: Place,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        /// Recipients and sendmail options (-f, -t, -i, -N, --cc, --bcc, …).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Shows one message with the status of each recipient.
    Show {
        #[command(flatten)]
        place: Place,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Also print the content.
        #[arg(long)]
        content: bool,
        /// The message id.
        id: String,
    },
    /// Lists the Outbox, like mailq; or, with --shape, counts it like Postfix's qshape.
    Queue {
        #[command(flatten)]
        place: Place,
        /// Print JSON, one message per line (with --shape, the table as one object).
        #[arg(long)]
        json: bool,
        /// Print qshape's table instead: the pending recipients of every Outbox message (held
        /// ones too) by domain (the type, for addresses that are not SMTP), and by the age of
        /// their message in minutes (5, 10, 20, …, 1280, older); counted in the store.
        #[arg(long)]
        shape: bool,
        /// With --shape: only the N domains with the most recipients (TOTAL counts them all).
        #[arg(long, value_name = "N", requires = "shape")]
        top: Option<usize>,
    },
    /// Lists one folder.
    List {
        #[command(flatten)]
        place: Place,
        /// Print JSON, one message per line.
        #[arg(long)]
        json: bool,
        /// The folder, e.g. Inbox.
        folder: String,
    },
    /// Lists the folders.
    Folders {
        #[command(flatten)]
        place: Place,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tries every waiting recipient now (of one transport, if named).
    Flush {
        #[command(flatten)]
        place: Place,
        /// The transport instance.
        transport: Option<String>,
    },
    /// Shows every provider instance: online, offline or in error, and what waits for it.
    Status {
        #[command(flatten)]
        place: Place,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Keeps a queued message from being sent until it is released.
    Hold {
        #[command(flatten)]
        place: Place,
        /// The message id.
        id: String,
    },
    /// Lets a held message go, now.
    Release {
        #[command(flatten)]
        place: Place,
        /// The message id.
        id: String,
    },
    /// Deletes a message (from any folder) for good.
    Delete {
        #[command(flatten)]
        place: Place,
        /// The message id.
        id: String,
    },
    /// Lists the SMTP listeners' bans: clients banned after failed authentications.
    Bans {
        #[command(flatten)]
        place: Place,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lifts the ban on a client of the SMTP listeners (and forgets its failed logins).
    Unban {
        #[command(flatten)]
        place: Place,
        /// Its address, as `bans` shows it (an IPv6 client as its /64).
        address: String,
    },
    /// Prints an event for every inbound message and report the store takes, until stopped.
    Watch {
        #[command(flatten)]
        place: Place,
        /// One JSON object per event and line.
        #[arg(long)]
        json: bool,
    },
    /// Holds one isolated provider instance for a running host (started by the host itself,
    /// with its sockets on descriptors 3 to 5; not for people).
    #[command(hide = true)]
    RunProvider {
        /// The library file.
        #[arg(long)]
        library: PathBuf,
        /// transport, preprocessor or hook.
        #[arg(long)]
        kind: String,
        /// The provider's name in the library.
        #[arg(long)]
        provider: String,
        /// The instance's name.
        #[arg(long)]
        instance: String,
        /// The host's log level.
        #[arg(long)]
        log_level: log::LevelFilter,
    },
}

fn main() -> ExitCode {
    let mode = match sendmail::invoked_as().as_deref() {
        Some("sendmail") => Some(None),
        Some("mailq") => Some(Some(Mode::ListQueue)),
        Some("newaliases") => Some(Some(Mode::RebuildAliases)),
        _ => None,
    };
    if let Some(mode) = mode {
        start_logging();
        let args: Vec<String> = std::env::args().skip(1).collect();
        let place = Place {
            config: None,
            data_dir: None,
        };
        return sendmail(&place, &args, mode, Print::Nothing);
    }
    let command = Cli::parse().command;
    if let Command::RunProvider {
        library,
        kind,
        provider,
        instance,
        log_level,
    } = command
    {
        // The child logs through its host, not to the terminal.
        return run_provider(library, &kind, provider, instance, log_level);
    }
    start_logging();
    match command {
        Command::RunProvider { .. } => unreachable!("answered above"),
        Command::Run { place, providers } => run(&place, providers),
        Command::Providers { providers, all } => list_providers(providers, all),
        Command::Submit { place, json, args } => {
            let print = if json { Print::Json } else { Print::Id };
            sendmail(&place, &args, None, print)
        }
        Command::Show {
            place,
            json,
            content,
            id,
        } => ask(&place, &Request::Show { id, content }, json),
        Command::Queue {
            place,
            json,
            shape: true,
            top,
        } => ask(&place, &Request::Shape { top }, json),
        Command::Queue { place, json, .. } => list_folder(&place, None, json),
        Command::List {
            place,
            json,
            folder,
        } => list_folder(&place, Some(folder), json),
        Command::Folders { place, json } => ask(&place, &Request::Folders, json),
        Command::Flush { place, transport } => ask(&place, &Request::Flush { transport }, false),
        Command::Status { place, json } => ask(&place, &Request::Status, json),
        Command::Hold { place, id } => ask(&place, &Request::Hold { id }, false),
        Command::Release { place, id } => ask(&place, &Request::Release { id }, false),
        Command::Delete { place, id } => ask(&place, &Request::Delete { id }, false),
        Command::Bans { place, json } => ask(&place, &Request::Bans, json),
        Command::Unban { place, address } => ask(&place, &Request::Unban { address }, false),
        Command::Watch { place, json } => watch(&place, json),
    }
}

fn start_logging() {
    logging::start();
}

/// Says why `run` stops: on standard error as the other commands do, or, once the profile has
/// made the log JSON, as a log record (every line on standard error is then JSON), unless
/// `RUST_LOG` would drop it.
fn fatal(error: impl std::fmt::Display) {
    if logging::is_json() && log::log_enabled!(log::Level::Error) {
        log::error!("{error}");
    } else {
        eprintln!("spooler-host: {error}");
    }
}

fn run_provider(
    library: PathBuf,
    kind: &str,
    provider: String,
    instance: String,
    log_level: log::LevelFilter,
) -> ExitCode {
    let kind = match kind {
        "transport" => ProviderKind::Transport,
        "preprocessor" => ProviderKind::Preprocessor,
        "hook" => ProviderKind::Hook,
        other => {
            eprintln!("spooler-host run-provider: `{other}` is not a kind that runs isolated");
            return ExitCode::from(exit::USAGE);
        }
    };
    child::serve(RunnerArgs {
        library,
        kind,
        provider,
        instance,
        log_level,
    })
}

fn run(place: &Place, providers: Option<PathBuf>) -> ExitCode {
    // Chosen once: the log names the profile that was read.
    let chosen = place.chosen_profile();
    let profile = match place.read(chosen.as_ref()) {
        Ok(profile) => profile,
        Err(error) => {
            eprintln!("spooler-host: {error}");
            return ExitCode::from(exit::USAGE);
        }
    };
    logging::set_format(profile.log_format);
    log::info!("{}", place.describe(chosen.as_ref(), &profile));
    let folder_of = |profile: &Profile| {
        providers
            .clone()
            .or_else(|| profile.providers.clone())
            .unwrap_or_else(paths::default_providers_folder)
    };
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(error) => {
            fatal(format_args!("cannot handle signals: {error}"));
            return ExitCode::FAILURE;
        }
    };
    let spooler = match Spooler::start(&profile, &folder_of(&profile)) {
        Ok(spooler) => spooler,
        Err(error) => {
            fatal(error);
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            log::info!("SIGHUP: reloading the profile and rescanning the providers folder");
            match place.profile() {
                Ok(profile) => {
                    logging::set_format(profile.log_format);
                    spooler.reload(&profile, &folder_of(&profile));
                }
                Err(error) => log::error!("reload: {error}; keeping the running configuration"),
            }
        } else {
            log::info!("signal {signal}: shutting down");
            break;
        }
    }
    spooler.shutdown();
    ExitCode::SUCCESS
}

fn watch(place: &Place, json: bool) -> ExitCode {
    let socket = match place.profile() {
        Ok(profile) => profile.socket_path(),
        Err(error) => {
            eprintln!("spooler-host: {error}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let printed = client::watch(&socket, |event| {
        if json {
            println!(
                "{}",
                serde_json::to_string(event).expect("events serialize")
            );
        } else {
            let what = match event.kind {
                MailEventKind::Report => "report",
                MailEventKind::NewMail => "new mail",
            };
            println!(
                "{what} in {}: {} from {}: {}",
                event.folder, event.id, event.sender, event.subject
            );
        }
        use std::io::Write;
        std::io::stdout().flush().ok();
    });
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => client_failure(error),
    }
}

/// Says why a client command failed; sendmail's EX_UNAVAILABLE when no spooler answers.
fn client_failure(error: ClientError) -> ExitCode {
    eprintln!("spooler-host: {error}");
    match error {
        ClientError::NotRunning(_) | ClientError::Lost(_) => ExitCode::from(exit::UNAVAILABLE),
        ClientError::Refused(..) => ExitCode::FAILURE,
    }
}

fn list_providers(providers: Option<PathBuf>, all: bool) -> ExitCode {
    let folder = providers.unwrap_or_else(paths::default_providers_folder);
    match loader::load_folder(&folder) {
        Ok(folder) => {
            print!("{}", listing(&folder, all));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("spooler-host: {error}");
            ExitCode::FAILURE
        }
    }
}

/// sendmail's command line (`submit`, or the binary invoked as `sendmail`); invoked as
/// `mailq` or `newaliases`, the mode that name stands for.
fn sendmail(place: &Place, args: &[String], mode: Option<Mode>, print: Print) -> ExitCode {
    let mut args = match sendmail::parse(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{}: {error}", sendmail::program());
            return ExitCode::from(exit::USAGE);
        }
    };
    args.mode = mode.unwrap_or(args.mode);
    match place.profile() {
        Ok(profile) => ExitCode::from(modes::run(&profile, &args, print)),
        Err(error) => {
            eprintln!("{}: {error}", sendmail::program());
            ExitCode::from(exit::USAGE)
        }
    }
}

/// Prints a folder (the Outbox, if `folder` is `None`) page by page as the host sends it,
/// so `queue | head` prints at once, and a reader that stops early ends the listing.
fn list_folder(place: &Place, folder: Option<String>, json: bool) -> ExitCode {
    use std::io::Write;
    let socket = match place.profile() {
        Ok(profile) => profile.socket_path(),
        Err(error) => {
            eprintln!("spooler-host: {error}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut after = None;
    let mut first = true;
    loop {
        let request = match &folder {
            Some(folder) => Request::List {
                folder: folder.clone(),
                after: after.take(),
                limit: None,
            },
            None => Request::Queue {
                after: after.take(),
                limit: None,
            },
        };
        let page = match client::request(&socket, &request, None) {
            Ok(page) => page,
            Err(error) => return client_failure(error),
        };
        let Response::Messages { messages, next } = &page else {
            eprintln!("spooler-host: unexpected answer {page:?}");
            return ExitCode::FAILURE;
        };
        // An empty page after full ones ends the listing; it is no "(no messages)".
        if first || !messages.is_empty() {
            let text = if json {
                as_json(&page)
            } else {
                as_table(&page)
            };
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::SUCCESS;
            }
        }
        first = false;
        match next {
            Some(next) => after = Some(next.clone()),
            None => return ExitCode::SUCCESS,
        }
    }
}

fn ask(place: &Place, request: &Request, json: bool) -> ExitCode {
    let socket = match place.profile() {
        Ok(profile) => profile.socket_path(),
        Err(error) => {
            eprintln!("spooler-host: {error}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match client::request(&socket, request, None) {
        Ok(response) => {
            print!(
                "{}",
                if json {
                    as_json(&response)
                } else {
                    as_table(&response)
                }
            );
            ExitCode::SUCCESS
        }
        Err(error) => client_failure(error),
    }
}

/// One line per library file, and one indented line per provider of a loaded library.
/// Other entries are counted, or listed too with `all`.
fn listing(folder: &ProviderFolder, all: bool) -> String {
    let mut out = format!("providers folder {}\n", folder.path.display());
    let mut skipped = 0;
    for file in &folder.files {
        let path = file.path.display();
        match &file.outcome {
            FileOutcome::Loaded(library) => {
                let manifest = &library.manifest;
                let runs = if isolation::is_bundled(&manifest.library) {
                    "in the host's process unless `isolate = true`"
                } else {
                    "isolated unless `isolate = false`"
                };
                out += &format!(
                    "{path}: loaded {} {} (provider-abi {}); runs {runs}\n",
                    manifest.library, manifest.version, manifest.abi_version
                );
                for (kind, info) in library.providers() {
                    let types: Vec<&str> = info.address_types.iter().map(|t| t.as_str()).collect();
                    out += &format!("    {kind:<12} {:<20} [{}]\n", info.name, types.join(", "));
                }
            }
            FileOutcome::Refused(refusal) => out += &format!("{path}: refused: {refusal}\n"),
            FileOutcome::Skipped(why) if all => out += &format!("{path}: skipped: {why}\n"),
            FileOutcome::Skipped(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        out += &format!("({skipped} other entries are not provider libraries; --all lists them)\n");
    }
    out
}
