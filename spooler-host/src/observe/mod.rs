//! What the host tells operators and programs about its work, beyond the log: counters and
//! histograms for Prometheus (`metrics`) and the stream of delivery events (`events`). Every
//! layer above records into them as it works, the way every layer logs; the HTTP front end
//! serves them. Both are process-wide, like the logger: one host is one process.
//!
//! May call: `base` only.

pub mod events;
pub mod metrics;
