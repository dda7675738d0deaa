//! HELO and EHLO: the client names itself, the transaction is reset (RFC 5321 §4.1.4), and
//! EHLO lists what this listener offers now. AUTH is listed only under TLS on submission, so
//! no client is invited to send a password in the clear; STARTTLS only before TLS.

use crate::reply::Reply;
use crate::session::{Flow, Helo, Session};

impl<S> Session<S> {
    pub(crate) fn handle_ehlo(&mut self, host: &str, extended: bool) -> Flow {
        self.reset_transaction();
        self.helo = Some(Helo {
            name: host.to_string(),
            extended,
        });
        let smtp = &self.server.config.smtp;
        let hostname = &smtp.hostname;
        if !extended {
            return self.reply(Reply::bare(250, format!("{hostname} Hello {host}")));
        }
        let mut lines = vec![
            format!("{hostname} Hello {host} [{}]", self.conn.peer.ip()),
            "PIPELINING".to_string(),
            format!("SIZE {}", smtp.max_message_size),
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
}
