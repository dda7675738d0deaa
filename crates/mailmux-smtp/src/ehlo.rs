//! HELO and EHLO: the client names itself, the transaction is reset (RFC 5321 §4.1.4), and
//! EHLO lists what this listener offers now. AUTH is listed only under TLS on submission, so
//! no client is invited to send a password in the clear; STARTTLS only before TLS. SIZE is the
//! relay's limit, or, once the session acts for a tenant (after AUTH), the tenant's as the
//! session last read it (at AUTH or MAIL; MAIL and DATA enforce the tenant's current one).
//!
//! Neither moves mail, so both count against `smtp.max_idle_commands` like NOOP, and neither
//! queries the store more than once per session: a client looping on EHLO costs a reply each,
//! nothing more, and is closed at the budget.

use crate::reply::Reply;
use crate::session::{Flow, Helo, Session};

impl<S> Session<S> {
    pub(crate) async fn handle_ehlo(&mut self, host: &str, extended: bool) -> Flow {
        self.reset_transaction();
        self.helo = Some(Helo {
            name: host.to_string(),
            extended,
        });
        let hostname = &self.server.config.smtp.hostname;
        if !extended {
            return self.idle(Reply::bare(250, format!("{hostname} Hello {host}")));
        }
        let max_size = self.advertised_size().await;
        let hostname = &self.server.config.smtp.hostname;
        let mut lines = vec![
            format!("{hostname} Hello {host} [{}]", self.conn.peer.ip()),
            "PIPELINING".to_string(),
            format!("SIZE {max_size}"),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
            "CHUNKING".to_string(),
        ];
        if !self.conn.tls {
            lines.push("STARTTLS".to_string());
        }
        if self.conn.tls && self.conn.listener.is_submission() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        self.idle(Reply::multiline(250, lines))
    }

    /// The message size limit to advertise: the tenant's (under the relay's) when the session
    /// acts for one, else the relay's. The tenant is read only when the session knows nothing
    /// of it yet (a trusted-network session's first EHLO); a failed read advertises the
    /// relay's limit and is not remembered: MAIL and DATA enforce the tenant's anyway.
    async fn advertised_size(&mut self) -> u64 {
        let policy = &self.server.policy;
        let tenant_id = match self.identity.tenant_id() {
            Some(id) if self.conn.listener.is_submission() => id,
            _ => return policy.relay_limits().max_size,
        };
        if let Some(max_size) = self.tenant_max_size {
            return max_size;
        }
        match policy.tenant(tenant_id).await {
            Ok(tenant) => {
                let max_size = policy.limits_for(&tenant).max_size;
                self.tenant_max_size = Some(max_size);
                max_size
            }
            Err(_) => policy.relay_limits().max_size,
        }
    }
}
