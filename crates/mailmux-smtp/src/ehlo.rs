//! HELO and EHLO: the client names itself, the transaction is reset (RFC 5321 §4.1.4), and
//! EHLO lists what this listener offers now. AUTH is listed only under TLS on submission, so
//! no client is invited to send a password in the clear; STARTTLS only before TLS. SIZE is the
//! relay's limit, or, once the session acts for a tenant (after AUTH), the tenant's as read now.

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
            return self.reply(Reply::bare(250, format!("{hostname} Hello {host}")));
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
        self.reply(Reply::multiline(250, lines))
    }

    /// The message size limit to advertise: the tenant's (under the relay's) when the session
    /// acts for one, else the relay's. A failed lookup advertises the relay's: MAIL and DATA
    /// enforce the tenant's anyway.
    async fn advertised_size(&self) -> u64 {
        let policy = &self.server.policy;
        let tenant_id = match self.identity.tenant_id() {
            Some(id) if self.conn.listener.is_submission() => id,
            _ => return policy.relay_limits().max_size,
        };
        match policy.tenant(tenant_id).await {
            Ok(tenant) => policy.limits_for(&tenant).max_size,
            Err(_) => policy.relay_limits().max_size,
        }
    }
}
