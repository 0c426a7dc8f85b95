//! What the fuzz targets share: a global allocator that measures, per thread, how many bytes
//! a piece of code holds at its peak, so that a target can assert that no input makes a
//! parser allocate beyond a bound (a length prefix believed, a line without end read whole).
//!
//! A test binary that uses it declares
//! `#[global_allocator] static ALLOCATOR: fuzz_support::Counting = fuzz_support::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Bytes allocated and not freed by this thread since the measurement began.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The most `LIVE` has been since the measurement began.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// The system allocator, counting what each thread holds.
pub struct Counting;

fn record(change: isize) {
    // `try_with`: a thread being torn down still allocates, with its counters gone.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(change);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is passed on to `System` unchanged; counting touches only
// thread-local cells that need no allocation and have no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

/// Runs `f` and returns its result with the most bytes this thread held at once meanwhile
/// (beyond what it held before). Only meaningful with [`Counting`] as the global allocator.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    let result = f();
    (result, PEAK.with(Cell::get).max(0) as usize)
}

/// Runs `f` and panics, naming both numbers, if it held more than `bound` bytes at once.
pub fn assert_peak_within<R>(bound: usize, what: &str, f: impl FnOnce() -> R) -> R {
    let (result, peak) = peak_during(f);
    assert!(
        peak <= bound,
        "{what} held {peak} bytes at its peak; the bound is {bound}"
    );
    result
}

/// A structure-aware input from blind bytes: each byte picks one of `pieces` (header names,
/// separators, protocol words), so that a fuzzer reaches the deep paths of a parser that
/// random bytes rarely get past.
pub fn assemble(picks: &[u8], pieces: &[&[u8]]) -> Vec<u8> {
    picks
        .iter()
        .flat_map(|&pick| pieces[usize::from(pick) % pieces.len()])
        .copied()
        .collect()
}

/// Pieces of RFC 5322 header blocks for [`assemble`]: field names (address lists among
/// them), folding, quoting, comments, groups, encoded words, and the empty line.
pub const HEADER_PIECES: &[&[u8]] = &[
    b"To:",
    b"Cc:",
    b"Bcc:",
    b"bcc :",
    b"From:",
    b"Subject:",
    b"Return-Path:",
    b"X-Envelope-To:",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n ",
    b"\r\n\t",
    b"\r\n\r\n",
    b" ",
    b":",
    b",",
    b";",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"(",
    b")",
    b"@",
    b".",
    b"ann@example.org",
    b"SMTP:",
    b"FAX:+4930123",
    b"Undisclosed recipients:;",
    b"=?utf-8?q?J=C3=B6rg?=",
    b"=?iso-8859-1?b?SvZyZw==?=",
    b"\xc3\xb6",
    b"\xff",
    b"\0",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    #[test]
    fn measures_what_is_held_at_once() {
        let ((), peak) = peak_during(|| {
            let big = vec![0u8; 1 << 20];
            drop(big);
            let small = vec![0u8; 1000];
            drop(small);
        });
        assert!((1 << 20..(1 << 20) + 1000).contains(&peak), "{peak}");
    }

    #[test]
    fn bytes_pick_pieces() {
        assert_eq!(assemble(&[0, 1, 2], &[b"To:", b" a@b"]), b"To: a@bTo:");
    }
}
