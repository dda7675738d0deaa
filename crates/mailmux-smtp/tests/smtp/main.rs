//! mailmux-smtp tests with real parts: sessions over in-memory pipes and over real TCP
//! listeners on 127.0.0.1:0, a real SQLite store in a temp dir, the real group-commit queue,
//! real TLS with a generated certificate.

mod mx;
mod policy;
mod session;
mod submission;
mod support;
mod tcp;
