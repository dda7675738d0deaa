//! What mailmux owes a message as a submission server (RFC 6409 §8), done at acceptance to the
//! bytes that are stored, so that the signature made from them at delivery covers the result:
//!
//! - a body line over 998 octets is re-encoded, not refused ([`crate::long_lines`]); a header
//!   line over the limit is refused, saying so;
//! - a missing `Date:` is added (RFC 6409 §8.6), in RFC 5322 form, in UTC;
//! - a missing `Message-ID:` is added (§8.3): `<queue id.random@smtp.hostname>`, unique without
//!   coordination and naming the queue entry for whoever traces it.
//!
//! SMTP submission and the HTTP send API do this; the MX listener does not (it passes on what
//! others' servers sent, and refuses what is malformed).

use mailmux_core::QueueId;
use mailmux_core::credential::random_id;
use mailmux_core::message_bytes::{count_fields, header_section_len};

use crate::content::{self, Problem, Scan};
use crate::long_lines;
use crate::verdict::Refusal;

/// What the added fields are made of.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// Our `smtp.hostname`: the right-hand side of the Message-ID.
    pub hostname: &'a str,
    pub queue_id: &'a QueueId,
    /// Unix seconds, for Date:.
    pub timestamp: i64,
}

/// The message as it is accepted: long body lines re-encoded, Date: and Message-ID: added when
/// missing. Other problems of the content (bare CR or LF, NUL) are left for
/// [`content::check`] to refuse: nothing is repaired that could hide a smuggling attempt.
///
/// Answers the content scan of the result with it, so the message is scanned once on the way
/// to its 250 (twice only when it was re-encoded). The fields added are short ASCII lines
/// ending in CRLF: they change nothing a scan finds.
pub fn complete(message: Vec<u8>, stamp: &Stamp<'_>) -> Result<(Vec<u8>, Scan), Refusal> {
    let scan = content::scan(&message);
    let (message, scan) = if scan.problem == Some(Problem::LongLine) {
        let reencoded = long_lines::reencode(&message)
            .map_err(|unfixable| unfixable.refusal())?
            .into_owned();
        let rescan = content::scan(&reencoded);
        (reencoded, rescan)
    } else {
        (message, scan)
    };
    Ok((add_missing_fields(message, stamp), scan))
}

/// `Date:` and `Message-ID:` added at the end of the header section when missing.
pub fn add_missing_fields(mut message: Vec<u8>, stamp: &Stamp<'_>) -> Vec<u8> {
    let mut fields = String::new();
    if count_fields(&message, "date") == 0 {
        let date = mail_parser::DateTime::from_timestamp(stamp.timestamp).to_rfc822();
        fields.push_str(&format!("Date: {date}\r\n"));
    }
    if count_fields(&message, "message-id") == 0 {
        fields.push_str(&format!(
            "Message-ID: <{}.{}@{}>\r\n",
            stamp.queue_id,
            random_id("", 12),
            stamp.hostname
        ));
    }
    if fields.is_empty() {
        return message;
    }
    let end = header_section_len(&message);
    // A header section that is the whole message may lack its last line end.
    if end > 0 && !message[..end].ends_with(b"\n") {
        fields.insert_str(0, "\r\n");
    }
    message.splice(end..end, fields.into_bytes());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(id: &QueueId) -> Stamp<'_> {
        Stamp {
            hostname: "relay.test",
            queue_id: id,
            timestamp: 1_057_056_757,
        }
    }

    #[test]
    fn missing_fields_are_added_at_the_end_of_the_header_section() {
        let id = QueueId("0123456789abcdef0123".into());
        let date = "Date: Tue, 1 Jul 2003 10:52:37 +0000\r\n";
        let cases: [(&str, &str); 6] = [
            (
                "Subject: s\r\n\r\nbody\r\n",
                "Subject: s\r\nDATE\r\nMSGID\r\n\r\nbody\r\n",
            ),
            (
                "Subject: s\r\ndate: x\r\n\r\nbody\r\n",
                "Subject: s\r\ndate: x\r\nMSGID\r\n\r\nbody\r\n",
            ),
            (
                "Message-Id: <a@b>\r\n\r\nDate: in the body\r\n",
                "Message-Id: <a@b>\r\nDATE\r\n\r\nDate: in the body\r\n",
            ),
            ("Date: x\r\nMessage-ID: <a@b>\r\n\r\nb\r\n", "SAME"),
            ("\r\nbody only\r\n", "DATE\r\nMSGID\r\n\r\nbody only\r\n"),
            ("Subject: no body", "Subject: no body\r\nDATE\r\nMSGID\r\n"),
        ];
        for (message, want) in cases {
            let out = String::from_utf8(add_missing_fields(message.into(), &stamp(&id))).unwrap();
            let want = if want == "SAME" { message } else { want };
            let mut got = out.replace(date.trim_end(), "DATE");
            let msgid = got
                .lines()
                .find(|l| l.starts_with("Message-ID: <0123456789abcdef0123."))
                .map(str::to_string);
            if let Some(line) = msgid {
                assert!(line.ends_with("@relay.test>"), "{line}");
                got = got.replace(&line, "MSGID");
            }
            assert_eq!(got, want, "{message:?}");
        }
        let a = add_missing_fields(b"\r\nx".to_vec(), &stamp(&id));
        let b = add_missing_fields(b"\r\nx".to_vec(), &stamp(&id));
        assert_ne!(a, b, "each Message-ID is unique");
    }

    #[test]
    fn complete_reencodes_long_lines_and_refuses_long_headers() {
        let id = QueueId("0123456789abcdef0123".into());
        let long = "z".repeat(2000);
        let (out, scan) = complete(
            format!("Subject: s\r\n\r\n{long}\r\n").into_bytes(),
            &stamp(&id),
        )
        .unwrap();
        assert_eq!(content::scan(&out).problem, None);
        assert_eq!(
            scan,
            content::scan(&out),
            "the scan answered is the result's"
        );
        assert_eq!(count_fields(&out, "date"), 1);
        let refused = complete(
            format!("Subject: {long}\r\n\r\nb\r\n").into_bytes(),
            &stamp(&id),
        )
        .unwrap_err();
        assert_eq!(refused.reply.code(), 554);
        // Smuggling material is not touched here: the content check refuses it later.
        let bare_lf = format!("Subject: s\r\n\r\na\nb{long}\r\n");
        let (out, scan) = complete(bare_lf.clone().into_bytes(), &stamp(&id)).unwrap();
        assert_eq!(
            scan,
            content::scan(&out),
            "the scan answered is the result's"
        );
        assert!(out.ends_with(bare_lf.split("\r\n\r\n").nth(1).unwrap().as_bytes()));
    }
}
