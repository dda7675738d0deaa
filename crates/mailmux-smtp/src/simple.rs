//! The small verbs: RSET, NOOP, QUIT, HELP, VRFY. None moves mail, so all but QUIT count
//! against `smtp.max_idle_commands` (as EHLO and HELO do, in ehlo.rs).

use crate::reply::Reply;
use crate::session::{Flow, Session};

impl<S> Session<S> {
    pub(crate) fn handle_rset(&mut self) -> Flow {
        self.reset_transaction();
        self.idle(Reply::new(250, "2.0.0", "Ok"))
    }

    pub(crate) fn handle_noop(&mut self) -> Flow {
        self.idle(Reply::new(250, "2.0.0", "Ok"))
    }

    pub(crate) fn handle_quit(&mut self) -> Flow {
        let hostname = self.server.config.smtp.hostname.clone();
        self.reply(Reply::new(
            221,
            "2.0.0",
            format!("{hostname} closing connection"),
        ));
        Flow::Close
    }

    pub(crate) fn handle_help(&mut self) -> Flow {
        self.idle(Reply::new(
            214,
            "2.0.0",
            "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY",
        ))
    }

    /// RFC 5321 §3.5.3: 252 says "cannot verify, will try", and tells a harvester nothing.
    pub(crate) fn handle_vrfy(&mut self) -> Flow {
        self.idle(Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept message and attempt delivery",
        ))
    }
}
