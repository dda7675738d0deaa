//! The `Received:` trace header (RFC 5321 §4.4) prepended to every accepted message, by SMTP
//! submission and by the HTTP send API alike: who handed it over (HELO name, if any, and IP),
//! to whom, how (RFC 3848 / RFC 6531 protocol names, or `HTTP`), under which queue id and when.

use std::net::IpAddr;

use mailmux_core::QueueId;

/// What the header records about one message.
pub struct Trace<'a> {
    /// The name the client gave in HELO/EHLO; `None` over HTTP, which has no such greeting.
    pub helo: Option<&'a str>,
    pub ip: IpAddr,
    /// Our `smtp.hostname`.
    pub hostname: &'a str,
    pub protocol: &'static str,
    pub id: &'a QueueId,
    /// Named only when the message has exactly one: listing several would tell every
    /// recipient who else got it (Bcc).
    pub recipient: Option<&'a str>,
    /// Unix seconds.
    pub timestamp: i64,
}

/// The `with` value of a message sent through the HTTP send API (an Atom, as RFC 5321's
/// `Attdl-Protocol` allows; the value other providers' HTTP APIs use too).
pub const HTTP: &str = "HTTP";

/// The `with` value: RFC 3848 (`ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA`), or the RFC 6531
/// `UTF8SMTP…` names when the transaction used SMTPUTF8.
pub fn protocol(extended: bool, tls: bool, authenticated: bool, smtputf8: bool) -> &'static str {
    match (extended, smtputf8, tls, authenticated) {
        (false, ..) => "SMTP",
        (true, false, false, false) => "ESMTP",
        (true, false, true, false) => "ESMTPS",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, true) => "ESMTPSA",
        (true, true, false, false) => "UTF8SMTP",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, true) => "UTF8SMTPSA",
    }
}

/// The header, folded, ending in CRLF.
pub fn header(trace: &Trace<'_>) -> String {
    let ip = match trace.ip {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let date = mail_parser::DateTime::from_timestamp(trace.timestamp).to_rfc822();
    let recipient = match trace.recipient {
        Some(rcpt) => format!("\r\n\tfor <{}>", sanitize(rcpt)),
        None => String::new(),
    };
    // RFC 5321's From-domain: the greeting's name with the address as TCP-info, or the
    // address literal alone when there was no greeting.
    let from = match trace.helo {
        Some(helo) => format!("{} ({ip})", sanitize(helo)),
        None => ip,
    };
    format!(
        "Received: from {from}\r\n\tby {host} (mailmux) with {protocol} id {id}{recipient};\r\n\t{date}\r\n",
        host = trace.hostname,
        protocol = trace.protocol,
        id = trace.id,
    )
}

/// The HELO name and addresses come from the client: keep them to characters that cannot
/// fold the header, open a comment or end the clause early.
fn sanitize(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || ".-_:[]@+=".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    if clean.is_empty() {
        "unknown".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_follow_rfc_3848_and_6531() {
        let cases = [
            ((false, true, true, false), "SMTP"),
            ((true, false, false, false), "ESMTP"),
            ((true, true, false, false), "ESMTPS"),
            ((true, false, true, false), "ESMTPA"),
            ((true, true, true, false), "ESMTPSA"),
            ((true, true, true, true), "UTF8SMTPSA"),
            ((true, false, false, true), "UTF8SMTP"),
        ];
        for ((extended, tls, auth, utf8), want) in cases {
            assert_eq!(protocol(extended, tls, auth, utf8), want);
        }
    }

    #[test]
    fn header_names_everything_and_stays_one_header() {
        let id = QueueId("0123456789abcdef0123".into());
        let trace = Trace {
            helo: Some("client.example\r\nX-Injected: yes"),
            ip: "2001:db8::1".parse().unwrap(),
            hostname: "relay.example",
            protocol: "ESMTPSA",
            id: &id,
            recipient: Some("bob@example.org"),
            timestamp: 1_057_056_757,
        };
        let text = header(&trace);
        assert_eq!(
            text,
            "Received: from client.example??X-Injected:?yes ([IPv6:2001:db8::1])\r\n\
             \tby relay.example (mailmux) with ESMTPSA id 0123456789abcdef0123\r\n\
             \tfor <bob@example.org>;\r\n\tTue, 1 Jul 2003 10:52:37 +0000\r\n"
        );
        let no_rcpt = header(&Trace {
            recipient: None,
            ip: "127.0.0.1".parse().unwrap(),
            ..trace
        });
        assert!(no_rcpt.contains("([127.0.0.1])") && !no_rcpt.contains("for <"));
        let http = header(&Trace {
            helo: None,
            ip: "127.0.0.1".parse().unwrap(),
            protocol: HTTP,
            ..trace
        });
        assert!(
            http.starts_with(
                "Received: from [127.0.0.1]\r\n\tby relay.example (mailmux) with HTTP id "
            ),
            "{http}"
        );
    }
}
