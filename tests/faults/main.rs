//! End to end, issue 9: delivery under faults. The real mailmux binary (one node on SQLite, or
//! several on one Postgres), a real receiving SMTP server in another process that misbehaves on
//! purpose (slow, or closing after the final dot), a dead destination that answers 421, a real
//! DNS server whose answers aim at private and metadata addresses, `kill -9`, SIGTERM and a
//! database that goes away.
//!
//! What a user of the relay would check, each in its own test:
//! - a remote slower than the lease gets the message once, also with two nodes;
//! - a node that dies for good has its acknowledged mail delivered by the other node;
//! - a lost reply to the final dot defers ("outcome unknown") instead of re-sending;
//! - a dead destination costs a bounded number of connections and does not hold up others;
//! - six `kill -9` cycles under load lose nothing and rarely duplicate;
//! - a database that disappears turns `/healthz` 503 and SMTP 4xx, and nothing 250'd is lost;
//! - MX answers pointing inward (10/8, 169.254.169.254, loopback unless allowed) bounce with
//!   5.4.4 without a connection; a message that went round too many hops bounces with 5.4.6;
//! - SIGTERM lets the delivery in flight finish, exits 0 and leaves no lease behind;
//! - a full spool answers 451 4.3.0, never 250, and accepts again once there is room;
//!   orphaned bodies are swept at start-up, queued ones kept; large bodies survive `kill -9`.
//!
//! Nothing here connects outside 127.0.0.0/8: 10.0.0.1 and 169.254.169.254 exist only as DNS
//! answers, and that test first proves with a loopback canary that refused addresses are not
//! connected to before it publishes them.
//!
//! One binary, a file per concern: `leases.rs`, `dead_destination.rs`, `crashes.rs`, `inward.rs`,
//! `spool.rs`;
//! `support.rs` holds what they share.
#![allow(clippy::disallowed_methods)] // synchronous tests driving real processes: no runtime here for std::thread::sleep to block

#[path = "../common/mod.rs"]
mod common;

mod crashes;
mod dead_destination;
mod inward;
mod leases;
mod spool;
mod support;
