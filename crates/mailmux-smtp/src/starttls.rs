//! STARTTLS (RFC 3207). The handler only agrees; the session loop then drops whatever the
//! client pipelined behind the command (CVE-2011-0411) and hands the bare stream back for the
//! handshake, after which a fresh session starts with nothing remembered.

use crate::metrics::RejectReason;
use crate::reply::Reply;
use crate::session::{Flow, Session};

impl<S> Session<S> {
    pub(crate) fn handle_starttls(&mut self) -> Flow {
        if self.conn.tls {
            return self.reject(
                RejectReason::Protocol,
                Reply::new(503, "5.5.1", "TLS is already active"),
            );
        }
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        Flow::StartTls
    }
}
