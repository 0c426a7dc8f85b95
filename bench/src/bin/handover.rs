//! `bench/handover`: how message content reaches an isolated provider's process, measured
//! both ways on this machine: copied once into the shared memory file the child has mapped
//! (what the host does, `providers::isolation::content`), against written through a Unix
//! socket and read on the other side (what the shared mapping replaces). Both ways include
//! the call's round trip on a socket, as a real call does. Each size is handed over many
//! times; the table gives the time per hand-over and the throughput.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use spooler_host::providers::isolation::content::SharedContent;

const SIZES: [usize; 4] = [4 << 10, 64 << 10, 1 << 20, 16 << 20];
/// Bytes handed over per size and way: enough to average out the noise.
const VOLUME: usize = 2 << 30;

fn main() {
    println!(
        "{:>10}  {:>16}  {:>16}  {:>8}",
        "content", "shared memory", "Unix socket", "ratio"
    );
    for size in SIZES {
        let rounds = (VOLUME / size).clamp(10, 100_000);
        let content = vec![b'x'; size];
        let shared = through_shared_memory(&content, rounds);
        let socket = through_socket(&content, rounds);
        println!(
            "{:>10}  {:>16}  {:>16}  {:>7.1}x",
            bytes(size),
            per_call(shared, rounds, size),
            per_call(socket, rounds, size),
            socket.as_secs_f64() / shared.as_secs_f64().max(1e-12)
        );
    }
}

/// The host writes into its mapping and tells the child (a thread here) over a socket; the
/// child finds the content in its own mapping and answers. A provider then reads the content
/// in place; over a socket it first has to be copied into the child's buffer.
fn through_shared_memory(content: &[u8], rounds: usize) -> Duration {
    let mut host = SharedContent::create().expect("a content file");
    let mut child =
        SharedContent::open(host.file().try_clone().expect("its descriptor")).expect("mapped");
    let (mut calls, mut child_calls) = UnixStream::pair().expect("a socket pair");
    let size = content.len();
    let reader = std::thread::spawn(move || {
        let mut call = [0u8; 8];
        for _ in 0..rounds {
            child_calls.read_exact(&mut call).expect("a call");
            let view = child.read(u64::from_le_bytes(call) as usize).expect("read");
            child_calls.write_all(&[view[size - 1]]).expect("answered");
        }
    });
    let started = Instant::now();
    let mut answer = [0u8; 1];
    for _ in 0..rounds {
        host.write(content).expect("written");
        calls
            .write_all(&(size as u64).to_le_bytes())
            .expect("called");
        calls.read_exact(&mut answer).expect("answered");
    }
    let took = started.elapsed();
    reader.join().expect("the reader ends");
    took
}

/// The host writes the content through a socket; the child (a thread here) reads all of it
/// into its buffer and answers.
fn through_socket(content: &[u8], rounds: usize) -> Duration {
    let (mut host, mut child) = UnixStream::pair().expect("a socket pair");
    let size = content.len();
    let reader = std::thread::spawn(move || {
        let mut buffer = vec![0u8; size];
        for _ in 0..rounds {
            child.read_exact(&mut buffer).expect("read");
            child.write_all(&[1]).expect("acknowledged");
        }
    });
    let started = Instant::now();
    let mut acknowledgement = [0u8; 1];
    for _ in 0..rounds {
        host.write_all(content).expect("written");
        host.read_exact(&mut acknowledgement).expect("acknowledged");
    }
    let took = started.elapsed();
    reader.join().expect("the reader ends");
    took
}

fn per_call(took: Duration, rounds: usize, size: usize) -> String {
    let each = took.as_secs_f64() / rounds as f64;
    let rate = size as f64 / each / (1 << 30) as f64;
    format!("{:.1} µs {rate:.1} GiB/s", each * 1e6)
}

fn bytes(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s => format!("{} KiB", s >> 10),
    }
}
