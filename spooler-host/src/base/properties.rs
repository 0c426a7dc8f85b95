//! The names of the envelope properties the host writes and reads, in one place: intake and
//! the SMTP listener write them, the queue manager's reports read them.

/// What a failure report returns of the message: `FULL` (the whole message) or `HDRS` (its
/// headers, also without the property), as SMTP's `RET` (RFC 3461) and `sendmail -R` ask.
pub const RETURN: &str = "dsn.ret";

/// The client's envelope id (RFC 3461 `ENVID`), repeated in reports.
pub const ENVELOPE_ID: &str = "dsn.envid";

/// When the sender wants reports for one recipient (RFC 3461 `NOTIFY`): the value is the
/// recipient and the conditions.
pub const NOTIFY: &str = "dsn.notify";

/// The address a recipient was given as, when it is not its own:
/// `spooler.original-recipient.<TYPE:address>` = `rfc822; <address as submitted>` for a
/// recipient an alias made, or the client's `ORCPT` (RFC 3461) for one given over SMTP.
/// Reports show it as the Original-Recipient (RFC 3464).
pub const ORIGINAL_RECIPIENT: &str = "spooler.original-recipient.";
