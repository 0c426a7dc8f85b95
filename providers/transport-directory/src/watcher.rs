//! The watcher thread: tells the host when the offline marker appears or goes away, and
//! when new messages arrive in the pickup folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use provider_abi::{Host, Notice, ProviderState};

use crate::pickup::Pickup;

/// What the watcher looks at.
pub struct Watched {
    /// While this file exists, the transport is offline.
    pub offline_marker: PathBuf,
    /// The pickup folder, if the transport has inbound mail.
    pub pickup: Option<PathBuf>,
    /// How often it looks.
    pub interval: Duration,
}

/// Starts the watcher; it stops when `stop` is set.
pub fn start(watched: Watched, host: Host, stop: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut offline = watched.offline_marker.exists();
        report(&host, offline, &watched.offline_marker);
        let mut seen = BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            let now_offline = watched.offline_marker.exists();
            if now_offline != offline {
                offline = now_offline;
                report(&host, offline, &watched.offline_marker);
                if !offline {
                    log::info!("{} is gone: back online", watched.offline_marker.display());
                    host.notify(Notice::BackOnline);
                }
            }
            if let Some(folder) = &watched.pickup {
                let waiting: BTreeSet<String> = Pickup::waiting(folder)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                if waiting.difference(&seen).next().is_some() {
                    host.notify(Notice::NewMail);
                }
                seen = waiting;
            }
            thread::sleep(watched.interval);
        }
    });
}

fn report(host: &Host, offline: bool, marker: &Path) {
    if offline {
        host.set_status(
            ProviderState::Offline,
            format!("offline while {} exists", marker.display()),
        );
    } else {
        host.set_status(ProviderState::Online, "");
    }
}
