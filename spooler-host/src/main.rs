//! `spooler-host`: the spooler's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spooler_host::loader::{self, FileOutcome, ProviderFolder};
use spooler_host::paths;

#[derive(Parser)]
#[command(
    version,
    about = "A store-and-forward message spooler with provider libraries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Providers { providers, all } => {
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
                out += &format!(
                    "{path}: loaded {} {} (provider-abi {})\n",
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
