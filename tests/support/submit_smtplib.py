#!/usr/bin/env python3
"""Submit a message with Python's smtplib: the "application" client of mailmux's tests.

    submit_smtplib.py --port 2587 --user U --password P --from a@acme.test --to b@x.test msg.eml
    submit_smtplib.py --port 2465 --tls ... < msg.eml

TLS: STARTTLS when the server offers it (--starttls: required, --no-starttls: never), or implicit
TLS with --tls. Certificates are not verified: the relay's certificate is self-signed. The message
(a file, or stdin when no file or "-") is sent as bytes: smtplib dot-stuffs it and adds a final
CRLF if missing, and changes nothing else.

Prints one JSON line and exits 0 when the message was accepted (2xx after DATA), 1 otherwise:
    {"ok": true, "code": 250, "text": "2.0.0 Ok: queued as ...", "stage": "data",
     "tls": true, "rcpt": {"b@x.test": [250, "..."]}, "replies": [[250, "..."]]}
    {"ok": false, "stage": "mail", "error": "SMTPSenderRefused", "code": 530, "text": "..."}
"""

import argparse
import json
import smtplib
import ssl
import sys


def reply(code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return int(code) if code is not None else None, msg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    tls = ap.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="implicit TLS (port 465 style)")
    tls.add_argument("--starttls", action="store_true", help="require STARTTLS")
    tls.add_argument("--no-starttls", action="store_true", help="never STARTTLS")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--auth-mech", choices=["PLAIN", "LOGIN"], help="default: smtplib's choice")
    ap.add_argument("--ehlo", default="client.test", help="name given in EHLO")
    ap.add_argument("--from", dest="mail_from", required=True)
    ap.add_argument("--to", action="append", required=True, help="repeatable")
    ap.add_argument("--mail-option", action="append", default=[], help="e.g. SMTPUTF8")
    ap.add_argument("--rcpt-option", action="append", default=[], help="e.g. NOTIFY=NEVER")
    ap.add_argument("--repeat", type=int, default=1, help="transactions on one connection")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("message", nargs="?", default="-", help="message file; - or none: stdin")
    args = ap.parse_args()

    data = (
        sys.stdin.buffer.read()
        if args.message == "-"
        else open(args.message, "rb").read()  # noqa: SIM115 - read once, closed at exit
    )
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    out = {"ok": False, "stage": "connect", "tls": False}
    smtp = None
    try:
        if args.tls:
            smtp = smtplib.SMTP_SSL(
                args.host, args.port, local_hostname=args.ehlo, timeout=args.timeout, context=ctx
            )
            out["tls"] = True
        else:
            smtp = smtplib.SMTP(
                args.host, args.port, local_hostname=args.ehlo, timeout=args.timeout
            )
        out["stage"] = "ehlo"
        smtp.ehlo()
        if not args.tls and not args.no_starttls:
            if args.starttls or smtp.has_extn("starttls"):
                out["stage"] = "starttls"
                smtp.starttls(context=ctx)
                smtp.ehlo()
                out["tls"] = True
        if args.user is not None:
            out["stage"] = "auth"
            if args.auth_mech:
                smtp.user, smtp.password = args.user, args.password or ""
                method = smtp.auth_plain if args.auth_mech == "PLAIN" else smtp.auth_login
                code, msg = smtp.auth(args.auth_mech, method, initial_response_ok=True)
            else:
                code, msg = smtp.login(args.user, args.password or "")
            out["auth"] = list(reply(code, msg))

        replies = []
        for _ in range(max(1, args.repeat)):
            out["stage"] = "mail"
            code, msg = smtp.mail(args.mail_from, args.mail_option)
            if code != 250:
                smtp.rset()
                raise smtplib.SMTPSenderRefused(code, msg, args.mail_from)
            out["stage"] = "rcpt"
            rcpt = {}
            for to in args.to:
                code, msg = smtp.rcpt(to, args.rcpt_option)
                rcpt[to] = list(reply(code, msg))
            out["rcpt"] = rcpt
            if not any(200 <= c < 300 for c, _ in rcpt.values()):
                smtp.rset()
                raise smtplib.SMTPRecipientsRefused({k: tuple(v) for k, v in rcpt.items()})
            out["stage"] = "data"
            code, msg = smtp.data(data)
            replies.append(list(reply(code, msg)))
            if not 200 <= code < 300:
                raise smtplib.SMTPDataError(code, msg)
        out["replies"] = replies
        out["code"], out["text"] = replies[-1]
        out["ok"] = True
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
    except smtplib.SMTPRecipientsRefused as e:
        out["error"] = type(e).__name__
        first = next(iter(e.recipients.values()))
        out["code"], out["text"] = reply(*first)
    except smtplib.SMTPResponseException as e:  # AUTH, MAIL, DATA, and friends: they carry a code
        out["error"] = type(e).__name__
        out["code"], out["text"] = reply(e.smtp_code, e.smtp_error)
    except (smtplib.SMTPException, OSError) as e:  # no code: connection, TLS, not supported
        out["error"] = type(e).__name__
        out["code"], out["text"] = None, str(e)
    finally:
        if smtp is not None and not out["ok"]:
            try:
                smtp.close()
            except OSError:
                pass

    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
