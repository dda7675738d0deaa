#!/usr/bin/env python3
"""Receiving SMTP server for mailmux's end-to-end tests and benchmarks: the "remote MTA", the
smarthost, the bench sink.

Listens on 127.0.0.1 (port 0 unless --port), prints exactly one line {"port": N} on stdout once
listening, and runs until SIGTERM/SIGINT or EOF on stdin (a stdin of /dev/null is not watched).

With --dir DIR, every accepted message is written as DIR/<seq>.eml (the DATA content exactly as
received, after dot-unstuffing: no decoding, no newline normalisation) and then DIR/<seq>.json
{"seq", "mail_from", "rcpt_tos", "mail_options", "rcpt_options", "peer", "tls", "auth_login"}.
Both are written to a temporary name and renamed, .json last: a reader that sees <seq>.json can
trust <seq>.eml. <seq> is a zero-padded counter starting at 000001.

Behaviour switches (see --help): reject or temp-fail recipients by regex, temp-fail DATA, hide
8BITMIME/SMTPUTF8, offer STARTTLS (or implicit TLS), require AUTH, delay the DATA reply, close the
connection after the final dot without replying, discard and count.

Counters (--count-file): "messages" and "recipients" accepted, "rejected" and "tempfailed"
replies, "connections" accepted (TCP), "data_received" (DATA transactions whose content arrived
in full, counted before any delay or decision), "closed_after_dot". With --data-log FILE, each
such DATA transaction is also appended to FILE as one JSON line {"n", "message_id", "helo",
"peer", "mail_from", "rcpt_tos", "at"}, the moment its final dot arrives.
"""

import argparse
import asyncio
import datetime
import json
import logging
import os
import re
import signal
import ssl
import sys
import tempfile
import threading
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Counters:
    def __init__(self):
        self.messages = 0
        self.recipients = 0
        self.rejected = 0
        self.tempfailed = 0
        self.connections = 0
        self.closed = 0
        self.data_received = 0
        self.closed_after_dot = 0

    def as_dict(self):
        return {
            "messages": self.messages,
            "recipients": self.recipients,
            "rejected": self.rejected,
            "tempfailed": self.tempfailed,
            "connections": self.connections,
            "closed": self.closed,
            "data_received": self.data_received,
            "closed_after_dot": self.closed_after_dot,
        }


def write_atomic(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class SinkHandler:
    def __init__(self, args, counters):
        self.args = args
        self.counters = counters
        self.reject_rcpt = re.compile(args.reject_rcpt) if args.reject_rcpt else None
        self.tempfail_rcpt = None
        self.tempfail_rcpt_left = {}  # address (lowercased) -> temp failures still to give
        if args.tempfail_rcpt:
            pattern, _, n = args.tempfail_rcpt.rpartition(":")
            if not pattern or not n.isdigit():
                raise SystemExit("--tempfail-rcpt wants REGEX:N")
            self.tempfail_rcpt = (re.compile(pattern), int(n))
        self.tempfail_data_left = args.tempfail_data
        self.close_after_dot_left = args.close_after_dot
        self.seq = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        hidden = set()
        if self.args.no_8bitmime:
            hidden.add("8BITMIME")
        if not self.args.auth:
            hidden.add("AUTH")  # aiosmtpd offers it even with nothing to check it against
        out = []
        for r in responses:
            keyword = r[4:].split(" ", 1)[0].upper()
            if keyword not in hidden:
                out.append(r)
        # The last line of a multi-line reply must be "250 ", the others "250-".
        return [r.replace("250 ", "250-", 1) for r in out[:-1]] + [
            "250 " + out[-1][4:] if out else "250 HELP"
        ]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.args.no_8bitmime and any(o.upper() == "BODY=8BITMIME" for o in mail_options):
            return "555 5.5.4 BODY=8BITMIME not supported here"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_rcpt and self.reject_rcpt.search(address):
            self.counters.rejected += 1
            return f"550 5.1.1 <{address}>: no such user here"
        if self.tempfail_rcpt:
            pattern, n = self.tempfail_rcpt
            if pattern.search(address):
                key = address.lower()
                left = self.tempfail_rcpt_left.setdefault(key, n)
                if left > 0:
                    self.tempfail_rcpt_left[key] = left - 1
                    self.counters.tempfailed += 1
                    return f"451 4.3.0 <{address}>: try again later ({n - left + 1} of {n})"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def log_data(self, session, envelope):
        """One line in --data-log for a DATA transaction whose final dot just arrived."""
        head = envelope.original_content.split(b"\r\n\r\n", 1)[0]
        found = re.search(rb"(?im)^message-id:[ \t]*(\S[^\r\n]*)", head)
        entry = {
            "n": self.counters.data_received,
            "message_id": found.group(1).decode("utf-8", "replace").strip() if found else None,
            "helo": session.host_name,
            "peer": list(session.peer) if session.peer else None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        with open(self.args.data_log, "a") as f:
            f.write(json.dumps(entry) + "\n")

    async def handle_DATA(self, server, session, envelope):
        self.counters.data_received += 1
        if self.args.data_log:
            self.log_data(session, envelope)
        if self.close_after_dot_left > 0:
            # The reply to the final dot is lost: the client cannot know whether we took the
            # message. Close (FIN) and write nothing; connection_lost cancels this coroutine,
            # so the sleep only keeps aiosmtpd from pushing a reply in between.
            self.close_after_dot_left -= 1
            self.counters.closed_after_dot += 1
            server.transport.close()
            await asyncio.sleep(3600)
        if self.args.delay_ms:
            await asyncio.sleep(self.args.delay_ms / 1000.0)
        if self.tempfail_data_left > 0:
            self.tempfail_data_left -= 1
            self.counters.tempfailed += 1
            return "451 4.3.0 temporary failure at end of DATA, try again later"
        self.counters.messages += 1
        self.counters.recipients += len(envelope.rcpt_tos)
        self.seq += 1
        seq = self.seq
        if self.args.dir and not self.args.discard:
            transport = server.transport
            tls = transport is not None and transport.get_extra_info("ssl_object") is not None
            auth = session.auth_data  # LoginPassword after a successful AUTH PLAIN/LOGIN
            login = auth.login if isinstance(auth, LoginPassword) else None
            meta = {
                "seq": seq,
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "mail_options": list(envelope.mail_options),
                "rcpt_options": list(envelope.rcpt_options),
                "peer": list(session.peer) if session.peer else None,
                "helo": session.host_name,
                "tls": bool(tls),
                "auth_login": login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
                "received_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            }
            base = os.path.join(self.args.dir, f"{seq:06d}")
            # original_content: the bytes after dot-unstuffing, nothing decoded (decode_data=False).
            write_atomic(base + ".eml", envelope.original_content)
            write_atomic(base + ".json", json.dumps(meta).encode())
        return f"250 2.0.0 OK: queued as sink-{seq}"


def self_signed(tmpdir):
    """A throwaway certificate for 'localhost' / 127.0.0.1, as PEM files in tmpdir."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(tmpdir, "cert.pem")
    key_path = os.path.join(tmpdir, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def stdin_is_devnull():
    try:
        return os.path.samestat(os.fstat(0), os.stat(os.devnull))
    except OSError:
        return True


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hostname", default="sink.test", help="name in the greeting and EHLO")
    ap.add_argument("--dir", help="write <seq>.eml and <seq>.json here for every message")
    ap.add_argument("--discard", action="store_true", help="count messages, write nothing")
    ap.add_argument("--count-file", help="write counters as JSON here (every 100 ms and at exit)")
    ap.add_argument("--reject-rcpt", metavar="REGEX", help="550 5.1.1 for matching recipients")
    ap.add_argument(
        "--tempfail-rcpt",
        metavar="REGEX:N",
        help="451 4.3.0 the first N times for each matching recipient, then accept",
    )
    ap.add_argument(
        "--tempfail-data", type=int, default=0, metavar="N", help="451 at end of DATA, N times"
    )
    ap.add_argument("--no-8bitmime", action="store_true", help="do not offer 8BITMIME")
    ap.add_argument("--no-smtputf8", action="store_true", help="do not offer SMTPUTF8")
    ap.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"), help="offer STARTTLS")
    ap.add_argument(
        "--starttls-self-signed", action="store_true", help="offer STARTTLS with a fresh cert"
    )
    ap.add_argument("--require-starttls", action="store_true", help="530 until STARTTLS")
    ap.add_argument("--implicit-tls", action="store_true", help="TLS from the first byte (465)")
    ap.add_argument("--auth", metavar="USER:PASS", help="require AUTH PLAIN/LOGIN with these")
    ap.add_argument("--delay-ms", type=int, default=0, help="wait before the reply to DATA")
    ap.add_argument(
        "--close-after-dot",
        type=int,
        default=0,
        metavar="N",
        help="the first N DATA transactions: read the whole message, then close the connection "
        "without replying",
    )
    ap.add_argument("--data-log", metavar="FILE", help="append each DATA transaction as JSON")
    ap.add_argument("--size-limit", type=int, default=64 * 1024 * 1024, help="SIZE, bytes")
    ap.add_argument(
        "--line-length-limit",
        type=int,
        default=SMTP.line_length_limit,
        help="longest DATA line accepted, with CRLF (default: aiosmtpd's, RFC 5321's 1000 + 1)",
    )
    ap.add_argument("--verbose", action="store_true", help="aiosmtpd's log on stderr")
    ap.add_argument("--ignore-stdin", action="store_true", help="do not exit on stdin EOF")
    args = ap.parse_args()
    if args.discard and args.dir:
        args.dir = None
    return args


async def serve(args):
    counters = Counters()
    handler = SinkHandler(args, counters)

    tls_context = None
    if args.starttls or args.starttls_self_signed or args.implicit_tls:
        if args.starttls:
            cert, key = args.starttls
        else:
            cert, key = self_signed(tempfile.mkdtemp(prefix="smtp-sink-tls-"))
        tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_context.load_cert_chain(cert, key)

    authenticator = None
    if args.auth:
        user, _, password = args.auth.partition(":")

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user.encode()
                and auth_data.password == password.encode()
            )
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

    starttls = tls_context is not None and not args.implicit_tls

    class SinkSMTP(SMTP):
        # Read by SMTP.__init__ (it also sizes the stream reader's buffer).
        line_length_limit = args.line_length_limit

        def connection_lost(self, error):
            # connections - closed = connections open now: a test that killed its client
            # waits for 0, so that everything the dead client had sent is processed.
            counters.closed += 1
            super().connection_lost(error)

    def factory():
        # One protocol instance per TCP connection (STARTTLS keeps it).
        counters.connections += 1
        return SinkSMTP(
            handler,
            hostname=args.hostname,
            ident="mailmux test sink",
            data_size_limit=args.size_limit,
            decode_data=False,  # bytes in, bytes out: the .eml is what came over the wire
            enable_SMTPUTF8=not args.no_smtputf8,
            tls_context=tls_context if starttls else None,
            require_starttls=bool(starttls and args.require_starttls),
            authenticator=authenticator,
            auth_required=bool(args.auth),
            # STARTTLS offered: AUTH only after it, as real servers do. Plain or implicit TLS:
            # AUTH straight away (aiosmtpd does not see implicit TLS as "TLS").
            auth_require_tls=bool(args.auth and starttls),
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory,
        host=args.address,
        port=args.port,
        ssl=tls_context if args.implicit_tls else None,
        reuse_address=True,
        backlog=1024,
    )
    port = server.sockets[0].getsockname()[1]

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not args.ignore_stdin and not stdin_is_devnull():

        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, daemon=True).start()

    async def write_counts():
        last = None
        while True:
            now = counters.as_dict()
            if now != last:
                write_atomic(args.count_file, json.dumps(now).encode())
                last = now
            await asyncio.sleep(0.1)

    counter_task = loop.create_task(write_counts()) if args.count_file else None

    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    await stop.wait()

    server.close()
    if counter_task:
        counter_task.cancel()
        write_atomic(args.count_file, json.dumps(counters.as_dict()).encode())
    if args.discard or args.count_file:
        try:
            sys.stdout.write(json.dumps(counters.as_dict()) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            pass


def main():
    args = parse_args()
    # aiosmtpd warns about AUTH without TLS; on loopback with --auth and no STARTTLS that is the
    # point (a plain smarthost), so keep stderr for real problems.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="smtp_sink: %(message)s",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
