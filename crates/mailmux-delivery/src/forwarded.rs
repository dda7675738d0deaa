//! Bounces of forwarded mail. A message the MX forwarded (`forward` and `list` rules) is queued
//! with an SRS envelope sender (`mailmux_core::srs`), so that the next hop's SPF check passes
//! and remote bounces come back to our MX. When our own delivery of it fails for good, the DSN
//! goes straight to the address the SRS sender stands for (the original sender, or the previous
//! forwarder's SRS address) rather than to the SRS address: that would only come back to our MX
//! to be relayed on, one more hop for nothing.

use mailmux_core::now_ms;
use mailmux_core::srs::{self, Srs};
use tracing::{debug, warn};

use crate::Deliverer;

impl Deliverer {
    /// Where the DSN for a message from `sender` goes: the reversed SRS address when `sender`
    /// is one of ours and still valid, else `sender` itself.
    pub(crate) async fn dsn_recipient(&self, sender: &str) -> String {
        let is_srs = sender
            .rsplit_once('@')
            .is_some_and(|(local, _)| srs::is_srs_local(local));
        if !is_srs {
            return sender.to_string();
        }
        let master_key = self.config.storage.data_dir.join("master.key");
        let srs: &Srs = match self
            .srs
            .get_or_try_init(|| self.queue.store().srs(&master_key))
            .await
        {
            Ok(srs) => srs,
            Err(error) => {
                warn!(%error, "cannot load the SRS secret; the bounce goes to the SRS address");
                return sender.to_string();
            }
        };
        match srs.reverse(sender, srs::day(now_ms())) {
            Ok(original) => {
                debug!(sender, to = %original, "bounce of forwarded mail to the original sender");
                original
            }
            // Not ours (a tenant's own address that looks like SRS) or too old: the sender as
            // it is, like any other.
            Err(_) => sender.to_string(),
        }
    }
}
