//! The senders a message names in its headers (From:, Sender:): the addresses a recipient
//! sees, which must be the tenant's as much as the envelope sender is.

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::rules;
use crate::verdict::Refusal;

/// Every address in every From: and Sender: header, with the field it came from. All of them,
/// not the first: a second From: is how a forged sender would hide. A message without From:
/// yields none (applications do this; the header is not ours to add), but a From: that names no
/// checkable address is refused.
pub fn header_senders(message: &[u8]) -> Result<Vec<(&'static str, String)>, Refusal> {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for header in parsed.headers() {
        let field = match header.name {
            HeaderName::From => "From",
            HeaderName::Sender => "Sender",
            _ => continue,
        };
        let addresses: Option<Vec<&str>> = match &header.value {
            HeaderValue::Address(list) => list.iter().map(|a| a.address()).collect(),
            _ => None,
        };
        match addresses.filter(|a| !a.is_empty()) {
            Some(addresses) => {
                out.extend(addresses.into_iter().map(|a| (field, a.to_string())));
            }
            None => return Err(rules::header_without_address(field)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message and the (field, address) pairs it names.
    type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);

    #[test]
    fn senders_table() {
        let ok: [Case; 4] = [
            (b"Subject: none\r\n\r\nbody\r\n", &[]),
            (
                b"From: A <a@x.example>\r\nSender: s@y.example\r\n\r\n",
                &[("From", "a@x.example"), ("Sender", "s@y.example")],
            ),
            (
                b"From: a@x.example, b@z.example\r\n\r\n",
                &[("From", "a@x.example"), ("From", "b@z.example")],
            ),
            (
                b"From: a@x.example\r\nFrom: evil@other.example\r\n\r\n",
                &[("From", "a@x.example"), ("From", "evil@other.example")],
            ),
        ];
        for (message, want) in ok {
            let got = header_senders(message).unwrap();
            let got: Vec<(&str, &str)> = got.iter().map(|(f, a)| (*f, a.as_str())).collect();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(message));
        }
        let refused = header_senders(b"From: undisclosed\r\n\r\n").unwrap_err();
        assert_eq!(refused.reply.code(), 550);
    }
}
