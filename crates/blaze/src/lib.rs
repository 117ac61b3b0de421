//! Wiring of the one binary: which roles run in this process, on which
//! listeners, with which shared connections. `blaze serve`, `blaze dev up`
//! and the test harness all start roles through [`start`].

pub mod bench;
pub mod dev;
pub mod roles;

pub use roles::{Mesh, Role, start};
