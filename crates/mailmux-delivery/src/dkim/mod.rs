//! DKIM signing (RFC 6376) of outgoing mail: between routing and the transport, a message of a
//! tenant with `dkim_signing` gets a `DKIM-Signature` made with the active key of its From:
//! domain (DMARC alignment), or of its envelope sender's domain when From: names none of the
//! tenant's domains.
//!
//! Two halves, one file each:
//! - [`DomainSigner`] (`signer.rs`), sans I/O: one domain's key, parsed once, and the mail-auth signers built
//!   from it. Relaxed/relaxed; rsa-sha256 or ed25519-sha256 by key type; the header list of
//!   [`SIGNED_HEADERS`], signing only the fields present plus From once more than it appears
//!   (over-signing: a From: added later breaks the signature).
//! - [`Signers`] (`cache.rs`), the cache delivery asks per message: keyed by domain, it holds the built
//!   signer of the domain's active key and asks the store at most once a second whether that
//!   key is still the active one (a query that reads no key material). A key is unsealed and
//!   parsed only when it changes; never per message.
//!
//! Policy for a key that cannot be used (it does not unseal with this node's `master.key`, or
//! it does not parse, or its private half does not match the published public key): the
//! message is deferred with `451 4.7.0`, and the log says why. Sending it unsigned would be
//! worse: the tenant asked for signing, its DMARC policy may reject unsigned mail, and a
//! message rejected for DMARC is lost to the sender, while a deferred one is delivered as soon
//! as the key is fixed (or bounces after `delivery.max_age_secs`, telling the sender).

mod cache;
mod signer;
#[cfg(test)]
mod test_keys;

pub(crate) use cache::{Signers, Signing};
pub use signer::{DomainSigner, SIGNED_HEADERS, SignError, candidate_domains};
