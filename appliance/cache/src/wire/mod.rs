//! Wire tier: the request and response fields the cache reads itself —
//! `Range` (RFC 9110 §14) and the RFC 5861 stale directives and tags — as
//! borrowing parsers over `&str`. Everything else of RFC 9111 is
//! `http-cache-semantics`'.

pub mod directives;
pub mod range;
