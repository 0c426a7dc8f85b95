//! The status table: one row per provider instance, online, offline or in error, with the
//! reason. Providers set their own row through the host services; the queue manager sets rows for
//! faults it sees. Read by the queue manager (routing) and by clients (`status`).

use std::sync::Arc;

use parking_lot::RwLock;
use provider_abi::{ProviderKind, ProviderState, Timestamp};

/// One provider instance's row.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The instance name.
    pub name: String,
    /// Its kind.
    pub kind: ProviderKind,
    /// The provider it is an instance of.
    pub provider: String,
    /// Online, offline or error.
    pub state: ProviderState,
    /// Why, when not online.
    pub text: String,
    /// Since when it is in this state.
    pub since: Timestamp,
    /// For an isolated instance: its processes.
    pub processes: Option<Processes>,
}

/// An isolated instance's child processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processes {
    /// The children running now (one per `parallel` copy).
    pub pids: Vec<u32>,
    /// How many children died and were replaced.
    pub restarts: u32,
    /// The last death: when, and what the host saw.
    pub last_fault: Option<(Timestamp, String)>,
}

/// The table, shared between threads.
#[derive(Debug, Default, Clone)]
pub struct StatusTable(Arc<RwLock<Vec<StatusRow>>>);

impl StatusTable {
    /// Adds (or resets) the row of an instance, online.
    pub fn register(&self, name: &str, kind: ProviderKind, provider: &str) {
        let mut rows = self.0.write();
        rows.retain(|row| row.name != name);
        rows.push(StatusRow {
            name: name.to_owned(),
            kind,
            provider: provider.to_owned(),
            state: ProviderState::Online,
            text: String::new(),
            since: Timestamp::now(),
            processes: None,
        });
    }

    /// Notes that instance `name` runs in a new child process `pid`.
    pub fn process_started(&self, name: &str, pid: u32) {
        self.with_processes(name, |processes| processes.pids.push(pid));
    }

    /// Notes that child process `pid` of instance `name` ended; with `fault`, it died.
    pub fn process_ended(&self, name: &str, pid: u32, fault: Option<&str>) {
        self.with_processes(name, |processes| {
            processes.pids.retain(|&p| p != pid);
            if let Some(fault) = fault {
                processes.restarts += 1;
                processes.last_fault = Some((Timestamp::now(), fault.to_owned()));
            }
        });
    }

    /// When a child process of instance `name` last died, if one did.
    pub fn last_fault_at(&self, name: &str) -> Option<Timestamp> {
        let rows = self.0.read();
        let row = rows.iter().find(|row| row.name == name)?;
        row.processes
            .as_ref()?
            .last_fault
            .as_ref()
            .map(|(at, _)| *at)
    }

    fn with_processes(&self, name: &str, change: impl FnOnce(&mut Processes)) {
        let mut rows = self.0.write();
        if let Some(row) = rows.iter_mut().find(|row| row.name == name) {
            change(row.processes.get_or_insert_with(Processes::default));
        }
    }

    /// Sets an instance's state; logs changes. A provider reports a state when it changes,
    /// not per message, so this is the log's one line about an outage and one about its
    /// end, however much mail waits. `since` is when the state began: a new reason for the
    /// same state (refused, then timed out) is logged and shown, but does not reset it.
    pub fn set(&self, name: &str, state: ProviderState, text: &str) {
        let mut rows = self.0.write();
        let Some(row) = rows.iter_mut().find(|row| row.name == name) else {
            return;
        };
        if row.state == state && row.text == text {
            return;
        }
        match (row.state, state) {
            (ProviderState::Offline, ProviderState::Online) => {
                log::info!("{name}: back online; its waiting mail goes now")
            }
            (_, ProviderState::Online) => log::info!("{name}: online"),
            _ => log::warn!("{name}: {state}: {text}"),
        }
        if row.state != state {
            row.since = Timestamp::now();
        }
        row.state = state;
        row.text = text.to_owned();
    }

    /// Takes an offline instance as online again for an operator's flush, so that the mail
    /// waiting for it is tried now rather than when it says it is back; one that still cannot
    /// reach its server says it is offline again at its first attempt.
    pub fn try_again(&self, name: &str) {
        let mut rows = self.0.write();
        let offline =
            |row: &&mut StatusRow| row.name == name && row.state == ProviderState::Offline;
        if let Some(row) = rows.iter_mut().find(offline) {
            log::info!("{name}: offline, but the flush tries it anyway");
            row.state = ProviderState::Online;
            row.text = "trying again for a flush".to_owned();
            row.since = Timestamp::now();
        }
    }

    /// An instance's state (online if unknown).
    pub fn state(&self, name: &str) -> ProviderState {
        self.0
            .read()
            .iter()
            .find(|row| row.name == name)
            .map_or(ProviderState::Online, |row| row.state)
    }

    /// Every row, in registration (profile) order.
    pub fn rows(&self) -> Vec<StatusRow> {
        self.0.read().clone()
    }
}

impl StatusTable {
    /// Forgets the rows of instances `keep` says no (removed by a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.0.write().retain(|row| keep(&row.name));
    }
}

#[cfg(test)]
mod tests {
    use std::thread::sleep;
    use std::time::Duration;

    use super::*;

    fn row(table: &StatusTable) -> StatusRow {
        table.rows().remove(0)
    }

    #[test]
    fn since_is_when_the_state_began_not_when_its_reason_last_changed() {
        let table = StatusTable::default();
        table.register("relay", ProviderKind::Transport, "smtp");
        table.set("relay", ProviderState::Offline, "connection refused");
        let offline = row(&table);
        sleep(Duration::from_millis(5));

        table.set("relay", ProviderState::Offline, "timed out");
        let still = row(&table);
        assert_eq!(
            (still.text.as_str(), still.since),
            ("timed out", offline.since)
        );

        sleep(Duration::from_millis(5));
        table.set("relay", ProviderState::Online, "");
        let online = row(&table);
        assert_eq!(online.state, ProviderState::Online);
        assert!(online.since > offline.since);
    }
}
