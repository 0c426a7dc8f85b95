//! The bottom layer: small facts every other layer needs and none owns. Why mail did not go
//! (`bounce`), where things live (`paths`), sizes and durations as operators write them
//! (`units`), what mail needs everywhere it is made (`mail`: dates, Message-IDs, trace
//! fields), the envelope property names the host writes and reads (`properties`), and who
//! this process runs as (`user`).
//!
//! May call: the standard library and `provider-abi` only.

pub mod bounce;
pub mod mail;
pub mod paths;
pub mod properties;
pub mod units;
pub mod user;
