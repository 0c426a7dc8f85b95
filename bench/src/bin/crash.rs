//! `bench/crash`: the crash harness at full size. The release host is SIGKILLed (100 times
//! by default) while clients submit mail through SMTP to `smtp-sink` and through the
//! directory transport, and restarted each time; then it prints what was acknowledged,
//! lost, stored or delivered twice, and the delays. The README's "Reliability" figures come
//! from it.

use std::time::Duration;

use spooler_tests::crash::{self, CrashSettings};
use spooler_tests::{real_server, Site};

const USAGE: &str = "usage: bench/crash [--kills 100] [--submitters 4] [--longest-life-ms 1000]";

fn settings() -> Result<CrashSettings, String> {
    let mut settings = CrashSettings {
        kills: 100,
        submitters: 4,
        longest_life: Duration::from_millis(1000),
        drain_limit: Duration::from_secs(120),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(USAGE)?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: `{value}` is not a number\n{USAGE}"))?;
        match flag.as_str() {
            "--kills" => settings.kills = number as usize,
            "--submitters" => settings.submitters = (number as usize).max(1),
            "--longest-life-ms" => settings.longest_life = Duration::from_millis(number.max(10)),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(settings)
}

fn main() -> std::process::ExitCode {
    let settings = match settings() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}");
            return std::process::ExitCode::from(64);
        }
    };
    if real_server("smtp-sink").is_none() {
        eprintln!("bench/crash needs Postfix's smtp-sink (apt-get install postfix)");
        return std::process::ExitCode::FAILURE;
    }
    let site = Site::new();
    eprintln!(
        "{} kills, {} submitters, the host living up to {:?} between kills...",
        settings.kills, settings.submitters, settings.longest_life
    );
    let report = crash::run(&site, settings);
    print!("{}", report.table());
    println!(
        "SMTP cannot tell a message sent again from a new one: a delivery the server had \
         accepted but the host had not yet recorded when it was killed is made again."
    );
    if report.lost.is_empty() && report.stored_twice.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        println!(
            "lost: {:?}\nstored twice: {:?}",
            report.lost, report.stored_twice
        );
        std::process::ExitCode::FAILURE
    }
}
