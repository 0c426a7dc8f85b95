//! Provider libraries and the instances made from them: finding and checking the libraries
//! (`loader`), one thread per instance with its timeout and backoff (`worker`), the routing
//! table of the instances that run (`routing_table`), their status rows (`status`), the
//! services the host offers them (`host_services`), the calls whose answers are read alike
//! wherever they are made (`calls`), instances in processes of their own
//! (`isolation`), the record of crashes that holds poisonous messages (`quarantine`), and
//! the answer to a provider name the folder does not offer (`unknown`).
//!
//! Everything that calls into a provider goes through a worker here; the rest of the host
//! never holds a provider object. May call: `base`, `observe` and `config`.

pub mod calls;
pub mod host_services;
pub mod isolation;
pub mod loader;
pub mod quarantine;
pub mod routing_table;
pub mod status;
pub mod unknown;
pub mod worker;
