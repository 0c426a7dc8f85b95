//! Fuzz targets for what a POP3 server sends: status lines, multi-line answers with
//! dot-stuffing, UIDL listings. Run on stable by `cargo test` (bolero replays the seed
//! corpus in `__fuzz__/` and tries random inputs for a second); see README.md, "Fuzzing".

use std::io::{self, BufRead, Read};

use crate::pop3::{body, status_line, uid_listing, MAX_ANSWER, MAX_LINE};

#[global_allocator]
static ALLOCATOR: fuzz_support::Counting = fuzz_support::Counting;

/// A fetch as the transport makes it, with `server` as everything the server sends: the
/// greeting, USER, PASS, UIDL and its listing, then RETR and the message for each listed
/// number, DELE and QUIT. It stops at the first failure, as a fetch does.
fn fetch(server: &[u8]) {
    let mut reader = server;
    let held = fuzz_support::assert_peak_within(16 * server.len() + 4096, "a fetch", || {
        fetch_from(&mut reader)
    });
    assert!(
        held <= 2 * server.len(),
        "{held} bytes from {}",
        server.len()
    );
}

/// The bytes of the messages fetched from `reader`.
fn fetch_from(reader: &mut impl BufRead) -> usize {
    let mut held = 0;
    for _greeting_user_pass_uidl in 0..4 {
        if status_line(reader).is_err() {
            return held;
        }
    }
    let Ok(listing) = body(reader) else {
        return held;
    };
    for (_number, uid) in uid_listing(&listing) {
        assert!(
            !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_graphic()),
            "{uid:?}"
        );
        if status_line(reader).is_err() {
            return held;
        }
        match body(reader) {
            Ok(message) => held += message.len(),
            Err(_) => return held,
        }
        if status_line(reader).is_err() {
            return held;
        }
    }
    let _ = status_line(reader);
    held
}

#[test]
fn fetch_dialogue() {
    bolero::check!(name = "fetch_dialogue").for_each(fetch);
}

/// Server answers built from POP3's pieces, so that listings, dot-stuffed lines and the
/// terminating dot come up far more often than in random bytes.
#[test]
fn fetch_dialogue_from_pieces() {
    const PIECES: &[&[u8]] = &[
        b"+OK",
        b"+OK 2 messages\r\n",
        b"-ERR",
        b"-ERR no such message\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b".",
        b"..",
        b".\r\n",
        b" ",
        b"1 ",
        b"4294967296 ",
        b"-1 ",
        b"uid-",
        b"From: a@b\r\n",
        b"\xff\xfe",
        b"0",
    ];
    bolero::check!(name = "fetch_dialogue_from_pieces")
        .for_each(|picks: &[u8]| fetch(&fuzz_support::assemble(picks, PIECES)));
}

/// A server that sends `line` again and again, for ever.
struct Endless {
    line: Vec<u8>,
    at: usize,
}

impl Read for Endless {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let n = buffer.len().min(self.line.len() - self.at);
        buffer[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at = (self.at + n) % self.line.len();
        Ok(n)
    }
}

#[test]
fn a_line_without_end_is_refused_not_held() {
    let mut server = io::BufReader::new(io::repeat(b'+'));
    let error = fuzz_support::assert_peak_within(2 * MAX_LINE + 8192, "a status line", || {
        status_line(&mut server).unwrap_err()
    });
    assert!(error.to_string().contains("longer than"), "{error}");
}

#[test]
fn an_answer_without_end_is_refused_not_held() {
    let mut line = vec![b'a'; 64 * 1024];
    line.extend_from_slice(b"\r\n");
    let mut server = io::BufReader::new(Endless { line, at: 0 });
    let error = fuzz_support::assert_peak_within(2 * MAX_ANSWER + 8192, "a message", || {
        body(&mut server).unwrap_err()
    });
    assert!(
        error.to_string().contains("longer than") && error.to_string().contains("mailbox"),
        "{error}"
    );
}

#[test]
fn dot_stuffed_lines_are_unstuffed_and_the_lone_dot_ends() {
    let mut server: &[u8] = b"..leading dot\r\n...\r\nbare\n.\r\nafter\r\n";
    assert_eq!(
        body(&mut server).unwrap(),
        b".leading dot\r\n..\r\nbare\r\n"
    );
    assert_eq!(server, b"after\r\n");
}

/// Found by `fetch_dialogue_from_pieces`: a listing line's uid kept a carriage return and
/// spaces (`1 +OK\r+OK 2 messages`), to be stored as the message's source id.
#[test]
fn regression_a_uid_with_control_characters_or_spaces_is_skipped() {
    assert_eq!(
        uid_listing(b"1 +OK\r+OK 2 messages\r\n2 uid-2\r\n3 \r\n"),
        [(2, "uid-2".to_owned())]
    );
    fetch(b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n1 +OK\r+OK 2 messages\r\n.\r\n+OK\r\n");
}
