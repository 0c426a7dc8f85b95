//! `GET /`: the dashboard, one page (`dashboard.html`) with its script and styles inline:
//! no build step, nothing fetched from elsewhere (a mail server often has no way out). It
//! reads the API with the token the operator gives it, kept in the browser's session, and
//! follows the event stream with `fetch` (an `EventSource` cannot send the token).
//! `tests/features/dashboard.rs` drives it in a headless Chromium.

use super::reply::Reply;

/// The page.
pub fn page() -> Reply {
    Reply::new(
        200,
        "text/html; charset=utf-8",
        include_str!("dashboard.html"),
    )
    .with_header(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
    )
}
