//! Sans-IO tier: what a stored variant is, whether it may answer a request
//! now (fresh, stale inside an RFC 5861 window, or to be revalidated),
//! conditional requests against it, and the layout of a multi-range answer.
//! Time is always an argument.

pub mod conditional;
pub mod multipart;
pub mod variant;

pub use variant::{Decision, Meta};
