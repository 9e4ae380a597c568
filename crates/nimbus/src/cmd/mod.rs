//! The command lines of the services: every clap definition lives in this
//! binary, the library crates carry none.

pub(crate) mod bench;
pub(crate) mod group;
pub(crate) mod phone;
pub(crate) mod registry;
pub(crate) mod server;
