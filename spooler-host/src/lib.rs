//! The spooler host: it loads provider libraries and moves messages between the store and
//! the transports. The binary (`main.rs`) is a thin command line over this library, which
//! tests and embedders use directly.

pub mod loader;
pub mod paths;
