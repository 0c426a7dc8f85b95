//! Fuzz targets for pickup files: a file's envelope (`Return-Path`, `X-Envelope-To`) read
//! from whatever a writer dropped into the folder. Run on stable by `cargo test` (bolero
//! replays the seed corpus in `__fuzz__/` and tries random inputs for a second); see
//! README.md, "Fuzzing".

use provider_abi::headers::header_fields;

use crate::pickup::inbound;

#[global_allocator]
static ALLOCATOR: fuzz_support::Counting = fuzz_support::Counting;

/// Reads `file` as a pickup file: no panic, memory in proportion to the file, the content
/// kept as it was, and an envelope recipient for at most every `X-Envelope-To` field.
fn read_pickup_file(file: &[u8]) {
    let message =
        fuzz_support::assert_peak_within(16 * file.len() + 4096, "reading a pickup file", || {
            inbound("message.eml".into(), file.to_vec())
        });
    assert_eq!(message.content.as_slice(), file);
    let envelope_to = header_fields(file)
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("X-Envelope-To"))
        .count();
    assert!(message.recipients.len() <= envelope_to);
    for address in message
        .recipients
        .iter()
        .chain(message.sender.as_ref().into_option())
    {
        assert!(
            !address.address().chars().any(char::is_control),
            "{address}"
        );
    }
}

#[test]
fn pickup_file_of_bytes() {
    bolero::check!(name = "pickup_file").for_each(read_pickup_file);
}

#[test]
fn pickup_file_of_header_pieces() {
    bolero::check!(name = "pickup_file_from_pieces").for_each(|picks: &[u8]| {
        read_pickup_file(&fuzz_support::assemble(picks, fuzz_support::HEADER_PIECES))
    });
}
