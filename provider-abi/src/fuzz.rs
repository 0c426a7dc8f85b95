//! Fuzz targets for header field and recipient address parsing, which read whatever a
//! message or a user brings. Run on stable by `cargo test` (bolero replays the seed corpus
//! in `__fuzz__/` and tries random inputs for a second); see README.md, "Fuzzing".

use crate::headers::{field_spans, header, header_block_len, header_fields, mailboxes};
use crate::Address;

#[global_allocator]
static ALLOCATOR: fuzz_support::Counting = fuzz_support::Counting;

/// Reads `content`'s header fields: no panic, memory in proportion to the input, values
/// unfolded, `header` finds each field's first value, address fields give mailboxes, and
/// field spans lie in order inside the header block.
fn read_headers(content: &[u8]) {
    let fields =
        fuzz_support::assert_peak_within(8 * content.len() + 4096, "reading header fields", || {
            header_fields(content)
        });
    assert!(fields.len() <= content.split(|&b| b == b'\n').count());
    for (name, value) in &fields {
        assert!(
            !name.contains('\n') && !value.contains('\n'),
            "{name:?}: {value:?}"
        );
        let first = fields
            .iter()
            .find(|(other, _)| other.eq_ignore_ascii_case(name))
            .map(|(_, value)| value);
        assert_eq!(header(content, name).as_ref(), first);
    }
    let to = fuzz_support::assert_peak_within(8 * content.len() + 4096, "reading To", || {
        mailboxes(content, "To")
    });
    assert!(to.iter().all(|mailbox| !mailbox.address.is_empty()));
    let block = header_block_len(content);
    assert!(block <= content.len());
    let mut previous_end = 0;
    for span in field_spans(content, "Bcc") {
        assert!(previous_end <= span.start && span.start < span.end && span.end <= block);
        previous_end = span.end;
    }
}

/// Reads `input` as a recipient address: a parsed address prints as `TYPE:address` and
/// reads back as itself.
fn read_address(input: &[u8]) {
    let input = String::from_utf8_lossy(input);
    if let Ok(address) = Address::parse(&input) {
        assert!(crate::address::is_address_type(address.address_type()));
        assert_eq!(
            address.address_type(),
            address.address_type().to_ascii_uppercase()
        );
        assert!(!address.address().chars().any(char::is_control));
        assert_eq!(Address::parse(&address.to_string()), Ok(address));
    }
}

#[test]
fn header_fields_of_bytes() {
    bolero::check!(name = "header_fields").for_each(read_headers);
}

#[test]
fn header_fields_of_header_pieces() {
    bolero::check!(name = "header_fields_from_pieces").for_each(|picks: &[u8]| {
        read_headers(&fuzz_support::assemble(picks, fuzz_support::HEADER_PIECES))
    });
}

#[test]
fn address_of_bytes() {
    bolero::check!(name = "address").for_each(read_address);
}

#[test]
fn address_of_header_pieces() {
    bolero::check!(name = "address_from_pieces").for_each(|picks: &[u8]| {
        read_address(&fuzz_support::assemble(picks, fuzz_support::HEADER_PIECES))
    });
}
