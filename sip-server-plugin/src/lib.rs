//! The NSIS-enabled SIP server plugin (ITSP side).
//!
//! Kamailio mirrors REGISTERs and keep-alives to the plugin as HEP over UDP
//! (its `siptrace` module; fragment in `kamailio/netserv.cfg`). The plugin
//! keeps a registry of phones and of the appliances serving them, and signals
//! towards the phones (GIST + NetServ NSLP, signed with the ITSP's key):
//! keep-alives reaching the server lead to the KeepAlive module being
//! deployed on the appliances on the path; deployments are refreshed while
//! their phones stay registered and removed when they go idle.
//!
//! When the server nears its capacity, the plugin is its load monitor and
//! deploys overload control at the edge ([`overload`]).
//!
//! Tiers: [`hep`] and [`observe`] (wire), [`policy`] and [`overload::monitor`]
//! (sans-IO), [`daemon`] and [`overload::shell`] (I/O).

#![forbid(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod hep;
pub mod observe;
pub mod overload;
pub mod policy;
