//! Poison-message quarantine: which messages were in a provider's call when the process
//! running that provider died, how often, and which are therefore held.
//!
//! Two records, both in the data folder:
//! - The call journal (`provider-calls`): one fixed-size slot per worker thread of every
//!   in-process instance, written before each call (the instance and the message) and cleared
//!   after it. It is never synced: a write survives the death of the process that made it
//!   (the page cache outlives it), which is all it is for. When the host starts, a slot still
//!   marked is a call the host died in, and becomes a crash mark. A clean shutdown empties
//!   the journal.
//! - The crash marks (`crash-marks`): one line per crash, synced (crashes are rare). An
//!   isolated instance's child that dies marks its call's message at once, on the host's side.
//!
//! Which calls a dead host was in is not all the journal says. When a provider faults in the
//! host's process (a signal such as SIGSEGV or SIGABRT, or `exit`), a handler installed by
//! [`watch_for_faults`] marks the faulting thread's slot before the process ends; then only
//! that call is a crash, not the others that happened to be running. A host that died without
//! a word (SIGKILL: the OOM killer, `kill -9`, a power cut) marks every call it was in.
//!
//! A message with `threshold` marks against one instance is suspected of crashing it: the
//! queue manager holds it, and `release` forgets its marks. A crash in a call without a message
//! (fetching inbound mail, opening) marks the instance; an in-process instance with
//! `threshold` such marks is started isolated from then on.
//!
//! A host killed from outside (`kill -9`, a power cut) while a call runs marks that call's
//! message too: the journal cannot tell who sent the signal (the OOM killer ending a leak
//! sends the same one). One such death is far from the threshold; three in the same
//! message's calls are what the quarantine is for.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::sync::Once;

use parking_lot::Mutex;
use provider_abi::MessageId;

/// The journal's slot size: its state, a message id, the instance name's length and the name.
const SLOT: usize = 128;
const NAME_ROOM: usize = SLOT - 10;

/// A slot's first byte: no call.
const IDLE: u8 = 0;
/// A slot's first byte: a call is running.
const IN_CALL: u8 = 1;
/// A slot's first byte: the process faulted in this slot's thread during the call.
const FAULTED: u8 = 2;
/// The journal's first byte (slot 0 is its header, never a thread's): the process faulted in
/// a thread that was in no provider call (the host itself, the store, a thread a provider
/// started), so no call is to blame.
const FAULTED_OUTSIDE: u8 = 3;

/// The journal's descriptor, for the fault handler (-1: none).
static JOURNAL_FD: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The journal slot of the call this thread is in (-1: none), for the fault handler.
    static CURRENT_SLOT: Cell<i64> = const { Cell::new(-1) };
}

/// The quarantine, shared by workers, isolated instances, the queue manager and clients.
#[derive(Clone)]
pub struct Quarantine(Arc<Inner>);

struct Inner {
    threshold: u32,
    marks: Mutex<Marks>,
    journal: File,
    journal_path: PathBuf,
    /// Free slot numbers, and the next never used (slot 0 is the header).
    free_slots: Mutex<(Vec<u64>, u64)>,
    /// Set by a clean shutdown: calls made after it are not written.
    closed: AtomicBool,
}

#[derive(Default)]
struct Marks {
    messages: HashMap<MessageId, BTreeMap<String, u32>>,
    instances: HashMap<String, u32>,
    file: Option<File>,
}

/// Why a message is held by the quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspicion {
    /// The instance it crashed.
    pub instance: String,
    /// How often.
    pub crashes: u32,
}

impl std::fmt::Display for Suspicion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "suspected of crashing provider {} ({} times)",
            self.instance, self.crashes
        )
    }
}

impl Quarantine {
    /// Opens the marks and the journal in `data_dir`, turning the calls the host died in
    /// into marks.
    pub fn open(data_dir: &Path, threshold: u32) -> Result<Quarantine, String> {
        let marks_path = data_dir.join("crash-marks");
        let journal_path = data_dir.join("provider-calls");
        let context = |path: &Path, error: io::Error| format!("{}: {error}", path.display());
        let mut marks = Marks::default();
        match fs::read_to_string(&marks_path) {
            Ok(text) => text.lines().for_each(|line| marks.replay(line)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(context(&marks_path, error)),
        }
        let died_in = match fs::read(&journal_path) {
            Ok(journal) => calls_died_in(&journal),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(context(&journal_path, error)),
        };
        marks
            .rewrite(&marks_path)
            .map_err(|e| context(&marks_path, e))?;
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&journal_path)
            .map_err(|e| context(&journal_path, e))?;
        JOURNAL_FD.store(journal.as_raw_fd(), Ordering::SeqCst);
        let quarantine = Quarantine(Arc::new(Inner {
            threshold: threshold.max(1),
            marks: Mutex::new(marks),
            journal,
            journal_path,
            free_slots: Mutex::new((Vec::new(), 1)),
            closed: AtomicBool::new(false),
        }));
        for (instance, message) in died_in {
            let crashes = quarantine.record(&instance, message);
            match message {
                Some(id) => log::error!(
                    "the host stopped during a call of {instance} for message {id}, without a \
                     clean shutdown: crash {crashes} of {} before the message is held",
                    quarantine.threshold()
                ),
                None => log::error!(
                    "the host stopped during a call of {instance}, without a clean shutdown: \
                     crash {crashes} of {} before {instance} runs isolated",
                    quarantine.threshold()
                ),
            }
        }
        Ok(quarantine)
    }

    /// How many crashes hold a message.
    pub fn threshold(&self) -> u32 {
        self.0.threshold
    }

    /// Counts a crash of `instance` in a call about `message` (or about no message), stores
    /// it and returns how many there are now.
    pub fn record(&self, instance: &str, message: Option<MessageId>) -> u32 {
        let mut marks = self.0.marks.lock();
        let (line, crashes) = match message {
            Some(id) => {
                let count = marks
                    .messages
                    .entry(id)
                    .or_default()
                    .entry(instance.to_owned())
                    .or_default();
                *count += 1;
                (format!("message {id} {instance}\n"), *count)
            }
            None => {
                let count = marks.instances.entry(instance.to_owned()).or_default();
                *count += 1;
                (format!("instance {instance}\n"), *count)
            }
        };
        marks.append(&line);
        crashes
    }

    /// Why `message` is to be held, if it is suspected of crashing an instance.
    pub fn suspicion(&self, message: MessageId) -> Option<Suspicion> {
        let marks = self.0.marks.lock();
        let (instance, &crashes) = marks
            .messages
            .get(&message)?
            .iter()
            .max_by_key(|(_, crashes)| **crashes)?;
        (crashes >= self.0.threshold).then(|| Suspicion {
            instance: instance.clone(),
            crashes,
        })
    }

    /// Forgets `message`'s marks (released by an operator, or gone). True if it had any.
    pub fn forget(&self, message: MessageId) -> bool {
        let mut marks = self.0.marks.lock();
        if marks.messages.remove(&message).is_none() {
            return false;
        }
        marks.append(&format!("release {message}\n"));
        true
    }

    /// How many messages are suspected now.
    pub fn suspected(&self) -> usize {
        let marks = self.0.marks.lock();
        marks
            .messages
            .values()
            .filter(|crashes| crashes.values().any(|&c| c >= self.0.threshold))
            .count()
    }

    /// True if `instance` crashed the host in calls without a message `threshold` times: it
    /// runs isolated from now on.
    pub fn must_isolate(&self, instance: &str) -> bool {
        let marks = self.0.marks.lock();
        marks.instances.get(instance).copied().unwrap_or(0) >= self.0.threshold
    }

    /// A journal slot for one worker thread of in-process instance `instance`.
    pub fn slot(&self, instance: &str) -> CallSlot {
        let index = {
            let mut free = self.0.free_slots.lock();
            free.0.pop().unwrap_or_else(|| {
                free.1 += 1;
                free.1 - 1
            })
        };
        let mut record = [0u8; SLOT];
        let mut cut = instance.len().min(NAME_ROOM);
        while !instance.is_char_boundary(cut) {
            cut -= 1;
        }
        let name = &instance.as_bytes()[..cut];
        record[9] = name.len() as u8;
        record[10..10 + name.len()].copy_from_slice(name);
        CallSlot {
            quarantine: self.clone(),
            index,
            record,
        }
    }

    /// Empties the journal: the host stops cleanly, so no call it was making is a crash.
    pub fn clean_shutdown(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        if let Err(error) = self.0.journal.set_len(0) {
            log::warn!("{}: {error}", self.0.journal_path.display());
        }
    }
}

/// The calls a dead host's journal blames: the one its faulting thread was in, if the fault
/// handler marked one; none if the fault was in no call; else (a silent death, SIGKILL) every
/// call still marked. The instance and the message of each.
fn calls_died_in(journal: &[u8]) -> Vec<(String, Option<MessageId>)> {
    let slots = || journal.chunks_exact(SLOT).skip(1);
    let blamed = if journal.first() == Some(&FAULTED_OUTSIDE) {
        if slots().any(|slot| slot[0] == IN_CALL) {
            log::warn!(
                "the host died of a fault outside any provider call (in the host itself, the \
                 store, or a thread a provider started): no call is blamed for it"
            );
        }
        return Vec::new();
    } else if slots().any(|slot| slot[0] == FAULTED) {
        FAULTED
    } else {
        IN_CALL
    };
    slots()
        .filter(|slot| slot[0] == blamed)
        .filter_map(|slot| {
            let id = u64::from_le_bytes(slot[1..9].try_into().ok()?);
            let length = usize::from(slot[9]).min(NAME_ROOM);
            let instance = std::str::from_utf8(&slot[10..10 + length]).ok()?;
            Some((
                instance.to_owned(),
                Some(MessageId(id)).filter(|id| id.0 != 0),
            ))
        })
        .collect()
}

impl Marks {
    fn replay(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("message"), Some(id), Some(instance)) => {
                if let Ok(id) = id.parse::<MessageId>() {
                    *self
                        .messages
                        .entry(id)
                        .or_default()
                        .entry(instance.to_owned())
                        .or_default() += 1;
                }
            }
            (Some("instance"), Some(instance), None) => {
                *self.instances.entry(instance.to_owned()).or_default() += 1;
            }
            (Some("release"), Some(id), None) => {
                if let Ok(id) = id.parse::<MessageId>() {
                    self.messages.remove(&id);
                }
            }
            _ => log::warn!("crash-marks: a line this host does not read was dropped: {line}"),
        }
    }

    /// Writes the marks anew, without the released ones, and keeps the file for appending.
    fn rewrite(&mut self, path: &Path) -> io::Result<()> {
        let mut text = String::new();
        for (id, crashes) in &self.messages {
            for (instance, &count) in crashes {
                for _ in 0..count {
                    text += &format!("message {id} {instance}\n");
                }
            }
        }
        for (instance, &count) in &self.instances {
            for _ in 0..count {
                text += &format!("instance {instance}\n");
            }
        }
        let fresh = path.with_extension("new");
        let mut file = File::create(&fresh)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&fresh, path)?;
        self.file = Some(OpenOptions::new().append(true).open(path)?);
        Ok(())
    }

    fn append(&mut self, line: &str) {
        let Some(file) = &mut self.file else { return };
        if let Err(error) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            log::error!("crash-marks: cannot record `{}`: {error}", line.trim());
        }
    }
}

/// One worker thread's slot in the call journal; cleared and given back when dropped.
pub struct CallSlot {
    quarantine: Quarantine,
    index: u64,
    record: [u8; SLOT],
}

impl CallSlot {
    /// Writes that a call about `message` (or about none) starts now.
    pub fn enter(&mut self, message: Option<MessageId>) {
        self.record[0] = IN_CALL;
        self.record[1..9].copy_from_slice(&message.map_or(0, |id| id.0).to_le_bytes());
        self.write(&self.record.clone());
        CURRENT_SLOT.with(|current| current.set(self.index as i64));
    }

    /// Writes that the call returned.
    pub fn leave(&mut self) {
        CURRENT_SLOT.with(|current| current.set(-1));
        self.write(&[IDLE]);
    }

    fn write(&self, bytes: &[u8]) {
        if self.quarantine.0.closed.load(Ordering::Relaxed) {
            return;
        }
        let journal = &self.quarantine.0.journal;
        if let Err(error) = journal.write_all_at(bytes, self.index * SLOT as u64) {
            log::debug!("provider-calls: {error}");
        }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.leave();
        self.quarantine.0.free_slots.lock().0.push(self.index);
    }
}

/// The signals a native fault in a provider ends the process with.
const FAULTS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// The handlers that were in place before [`watch_for_faults`], one per signal of `FAULTS`.
static mut PREVIOUS: [Option<libc::sigaction>; 5] = [None; 5];

/// Installs the fault handler (for the signals of a native fault, and for `exit`): a thread
/// that faults during a provider call marks its journal slot, so that the restarted host
/// blames that call alone. Installed once, at start, before provider threads run.
pub fn watch_for_faults() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        for (index, &signal) in FAULTS.iter().enumerate() {
            // SAFETY: plain sigaction calls with zeroed, then filled, structures; PREVIOUS is
            // written here, once, before any provider thread (the only readers, in the
            // handler) starts.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fault
                    as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as usize;
                // SA_ONSTACK: a stack overflow is handled on the thread's alternate stack,
                // which Rust sets up for every thread.
                action.sa_flags = libc::SA_ONSTACK | libc::SA_SIGINFO;
                libc::sigemptyset(&mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut previous) == 0 {
                    (*std::ptr::addr_of_mut!(PREVIOUS))[index] = Some(previous);
                }
            }
        }
        // SAFETY: registers a plain function; it only reads a thread-local and writes a byte.
        unsafe { libc::atexit(on_exit) };
    });
}

/// Marks the calling thread's slot in the journal open as `fd`, if the thread is in a call,
/// as the one the process died in. Async-signal-safe: a const thread-local and `pwrite`.
fn mark_current_slot(fd: i32) {
    let index = CURRENT_SLOT.with(Cell::get);
    if index >= 0 && fd >= 0 {
        // SAFETY: pwrite of one byte from a static into a descriptor the host keeps open.
        unsafe { libc::pwrite(fd, [FAULTED].as_ptr().cast(), 1, index * SLOT as i64) };
    }
}

extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let fd = JOURNAL_FD.load(Ordering::Relaxed);
    if CURRENT_SLOT.with(Cell::get) >= 0 {
        mark_current_slot(fd);
    } else if fd >= 0 {
        // SAFETY: pwrite of one byte from a static into a descriptor the host keeps open.
        unsafe { libc::pwrite(fd, [FAULTED_OUTSIDE].as_ptr().cast(), 1, 0) };
    }
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
    let sent = unsafe { (*info).si_code } <= 0;
    // SAFETY: sigaction and raise are async-signal-safe; PREVIOUS was written before any
    // provider ran and is only read now.
    unsafe {
        let previous = FAULTS
            .iter()
            .position(|&s| s == signal)
            .and_then(|index| (*std::ptr::addr_of!(PREVIOUS))[index]);
        match previous {
            // A real fault happens again when this returns and ends the process as it would
            // have (Rust's handler reports a stack overflow first); abort() raises SIGABRT
            // again itself once its handler returns.
            Some(previous) if !sent => {
                libc::sigaction(signal, &previous, std::ptr::null_mut());
            }
            // Sent by kill() or raise(): nothing happens again by itself.
            _ => {
                libc::signal(signal, libc::SIG_DFL);
                libc::raise(signal);
            }
        }
    }
}

extern "C" fn on_exit() {
    mark_current_slot(JOURNAL_FD.load(Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_the_host_died_in_is_a_crash_mark_after_the_restart() {
        let folder = tempfile::tempdir().unwrap();
        let first = Quarantine::open(folder.path(), 2).unwrap();
        let mut slot = first.slot("relay");
        let mut other = first.slot("fax");
        slot.enter(Some(MessageId(0xab)));
        other.enter(Some(MessageId(0xcd)));
        other.leave();
        // The host dies here: nothing is dropped, nothing is synced.
        std::mem::forget((slot, other, first));
        let second = Quarantine::open(folder.path(), 2).unwrap();
        assert_eq!(second.suspicion(MessageId(0xab)), None);
        assert_eq!(second.suspicion(MessageId(0xcd)), None);
        let mut slot = second.slot("relay");
        slot.enter(Some(MessageId(0xab)));
        std::mem::forget((slot, second));
        let third = Quarantine::open(folder.path(), 2).unwrap();
        let suspicion = third.suspicion(MessageId(0xab)).unwrap();
        assert_eq!(
            suspicion.to_string(),
            "suspected of crashing provider relay (2 times)"
        );
        assert_eq!(third.suspected(), 1);
        assert!(third.forget(MessageId(0xab)));
        third.clean_shutdown();
        drop(third);
        let fourth = Quarantine::open(folder.path(), 2).unwrap();
        assert_eq!(fourth.suspicion(MessageId(0xab)), None);
        assert_eq!(fourth.suspected(), 0);
    }

    #[test]
    fn a_fault_in_one_call_blames_that_call_alone() {
        let folder = tempfile::tempdir().unwrap();
        let first = Quarantine::open(folder.path(), 1).unwrap();
        let mut crashing = first.slot("relay");
        let mut bystander = first.slot("fax");
        bystander.enter(Some(MessageId(0xcd)));
        crashing.enter(Some(MessageId(0xab)));
        // What the fault handler does in the crashing thread.
        mark_current_slot(first.0.journal.as_raw_fd());
        std::mem::forget((crashing, bystander, first));
        let second = Quarantine::open(folder.path(), 1).unwrap();
        assert!(second.suspicion(MessageId(0xab)).is_some());
        assert_eq!(second.suspicion(MessageId(0xcd)), None);
    }

    #[test]
    fn a_fault_outside_any_call_blames_none() {
        let folder = tempfile::tempdir().unwrap();
        let first = Quarantine::open(folder.path(), 1).unwrap();
        let mut bystander = first.slot("fax");
        bystander.enter(Some(MessageId(0xcd)));
        // What the fault handler does in a thread that is in no call (the store's, say).
        first.0.journal.write_all_at(&[FAULTED_OUTSIDE], 0).unwrap();
        std::mem::forget((bystander, first));
        let second = Quarantine::open(folder.path(), 1).unwrap();
        assert_eq!(second.suspicion(MessageId(0xcd)), None);
    }

    #[test]
    fn calls_without_a_message_mark_the_instance() {
        let folder = tempfile::tempdir().unwrap();
        let quarantine = Quarantine::open(folder.path(), 3).unwrap();
        for _ in 0..2 {
            quarantine.record("pop", None);
        }
        assert!(!quarantine.must_isolate("pop"));
        let mut slot = quarantine.slot("pop");
        slot.enter(None);
        std::mem::forget((slot, quarantine));
        let reopened = Quarantine::open(folder.path(), 3).unwrap();
        assert!(reopened.must_isolate("pop"));
        assert!(!reopened.must_isolate("relay"));
    }
}
