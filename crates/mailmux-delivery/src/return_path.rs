//! Custom MAIL FROM (return-path) domains: a tenant with the `custom_domains` feature may give a
//! sending domain a return-path subdomain (set through the admin API, with its MX and SPF
//! records, and used once a check finds them). Its mail then leaves with that domain in the
//! envelope sender, so bounces go to it and SPF is checked against it, while From: (and the
//! DKIM signature) stay the sending domain's.
//!
//! Only the wire changes: the queued message keeps the sender as submitted, which is where a
//! DSN goes and what the API shows.

use std::borrow::Cow;

use mailmux_core::address_domain;
use mailmux_queue::QueuedMessage;
use tracing::{debug, warn};

use crate::Deliverer;
use crate::route::Route;

impl Deliverer {
    /// The envelope sender on the wire: the sender's domain replaced by its return-path domain
    /// when there is one, the domain is the tenant's and the tenant has `custom_domains` (from
    /// `route`), and its DNS records were found. Otherwise the sender as submitted.
    pub(crate) async fn wire_sender<'m>(
        &self,
        message: &'m QueuedMessage,
        route: &Route,
    ) -> Cow<'m, str> {
        let submitted = Cow::Borrowed(message.mail_from.as_str());
        if !route.custom_domains || message.mail_from.is_empty() {
            return submitted;
        }
        let domain = address_domain(&message.mail_from);
        let setting = match self.queue.store().get_return_path(&domain).await {
            Ok(Some(setting)) if setting.tenant_id == message.tenant_id => setting,
            Ok(_) => return submitted,
            Err(error) => {
                // Sent with the sender as submitted: still deliverable, only not custom.
                warn!(%error, domain, "cannot read the return-path domain");
                return submitted;
            }
        };
        // Only once its MX and SPF records are found: before that, bounces to it would be
        // lost and receivers' SPF checks would fail.
        let Some(return_path) = setting.verified() else {
            return submitted;
        };
        let sender = with_domain(&message.mail_from, return_path);
        debug!(from = %message.mail_from, on_the_wire = %sender, "custom MAIL FROM domain");
        Cow::Owned(sender)
    }
}

/// `local@domain` with `domain` replaced.
fn with_domain(address: &str, domain: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, _)) => format!("{local}@{domain}"),
        None => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_domain_changes() {
        let cases = [
            ("app@acme.test", "bounce.acme.test", "app@bounce.acme.test"),
            ("a+tag@ACME.test", "mail.acme.test", "a+tag@mail.acme.test"),
            (
                "\"odd@local\"@acme.test",
                "b.acme.test",
                "\"odd@local\"@b.acme.test",
            ),
        ];
        for (address, domain, want) in cases {
            assert_eq!(with_domain(address, domain), want);
        }
    }
}
