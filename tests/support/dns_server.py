#!/usr/bin/env python3
"""Authoritative DNS server for mailmux's end-to-end tests.

Serves the records of a JSON zone file on 127.0.0.1, over UDP and TCP on the same port (large
answers, e.g. a DKIM key in TXT, are truncated over UDP and must be retried over TCP).

Zone file:

    {"zones": ["example.test"],            # optional; else the last two labels of every name
     "records": [
        {"name": "example.test", "type": "MX", "value": "10 mx.example.test"},
        {"name": "mx.example.test", "type": "A", "value": "127.0.0.1", "ttl": 0},
        {"name": "example.test", "type": "TXT", "value": "v=spf1 ip4:127.0.0.1 -all"},
        {"name": "s1._domainkey.example.test", "type": "TXT", "value": ["v=DKIM1; ", "p=..."]},
        {"name": "v6.example.test", "type": "AAAA", "value": "::1"},
        {"name": "www.example.test", "type": "CNAME", "value": "mx.example.test"}]}

Types: A, AAAA, MX, TXT, CNAME, NS, PTR, SRV ("prio weight port target"). TTL defaults to 0 so
that tests can change records at runtime without resolver caches getting in the way. The file is
re-read whenever its mtime (or size) changes.

Answers: authoritative; NXDOMAIN for unknown names inside a known zone, NOERROR with no answer for
known names (or empty non-terminals) without the asked type, both with the zone's SOA (minimum 0)
in the authority section; REFUSED for names outside every known zone. A CNAME is followed inside
the data. TXT values longer than 255 bytes are split into 255-byte character-strings. UDP answers
larger than 512 bytes (or the client's EDNS0 size) are sent truncated, so clients retry over TCP.

Prints exactly one line, {"port": N}, on stdout when both sockets are bound, and runs until
SIGTERM/SIGINT or EOF on stdin (so it dies with the test process that holds its stdin pipe; a
stdin of /dev/null is not watched).
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading

from dnslib import AAAA, CNAME, EDNS0, DNSHeader, DNSRecord, MX, NS, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A
from dnslib.server import BaseResolver, DNSHandler, DNSServer

SUPPORTED = {"A", "AAAA", "MX", "TXT", "CNAME", "NS", "PTR", "SRV"}


def norm(name):
    return str(name).strip().rstrip(".").lower()


def split_txt(value):
    """A TXT value (str or list of str) as a list of <=255-byte character-strings."""
    parts = value if isinstance(value, list) else [value]
    out = []
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        if not data:
            out.append(b"")
        for i in range(0, len(data), 255):
            out.append(data[i : i + 255])
    return out or [b""]


def make_rdata(rtype, value):
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "MX":
        pref, host = str(value).split(None, 1)
        return MX(host.strip(), int(pref))
    if rtype == "TXT":
        return TXT(split_txt(value))
    if rtype == "CNAME":
        return CNAME(value)
    if rtype == "NS":
        return NS(value)
    if rtype == "PTR":
        return PTR(value)
    if rtype == "SRV":
        prio, weight, port, target = str(value).split()
        return SRV(int(prio), int(weight), int(port), target)
    raise ValueError(f"unsupported record type {rtype}")


class Zone:
    """The parsed zone file: records by (name, type), the set of names and the known zones."""

    def __init__(self, data):
        self.records = {}  # (name, type) -> [(ttl, rdata)]
        self.names = set()
        for rec in data.get("records", []):
            name = norm(rec["name"])
            rtype = str(rec["type"]).upper()
            if rtype not in SUPPORTED:
                raise ValueError(f"unsupported record type {rtype} for {name}")
            ttl = int(rec.get("ttl", 0))
            self.records.setdefault((name, rtype), []).append((ttl, make_rdata(rtype, rec["value"])))
            self.names.add(name)
        zones = data.get("zones")
        if zones:
            self.zones = {norm(z) for z in zones}
        else:
            self.zones = {".".join(n.split(".")[-2:]) for n in self.names}

    def zone_of(self, qname):
        best = None
        for z in self.zones:
            if qname == z or qname.endswith("." + z):
                if best is None or len(z) > len(best):
                    best = z
        return best

    def name_exists(self, qname):
        # Exact name, or an empty non-terminal (a name with records below it).
        return any(n == qname or n.endswith("." + qname) for n in self.names)


class ZoneResolver(BaseResolver):
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.stamp = None
        self.zone = Zone({})
        self.reload()

    def reload(self):
        """Re-reads the zone file when its mtime or size changed. A half-written or broken file
        keeps the previous zone (tests write it atomically, but be forgiving)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self.lock:
            if stamp == self.stamp:
                return
            try:
                with open(self.path, "rb") as f:
                    zone = Zone(json.loads(f.read()))
            except (ValueError, KeyError, TypeError) as e:
                print(f"dns_server: bad zone file {self.path}: {e}", file=sys.stderr, flush=True)
                return
            self.zone = zone
            self.stamp = stamp

    def soa(self, zone_name):
        return RR(
            zone_name,
            QTYPE.SOA,
            ttl=0,
            rdata=SOA(f"ns.{zone_name}", f"hostmaster.{zone_name}", (1, 60, 60, 60, 0)),
        )

    def resolve(self, request, handler):
        self.reload()
        zone = self.zone
        reply = request.reply()
        reply.header.aa = 1
        reply.header.ra = 0
        reply.header.ad = 0  # an authoritative answer is not DNSSEC-validated data
        qname = norm(request.q.qname)
        qtype = QTYPE[request.q.qtype]
        zone_name = zone.zone_of(qname)
        if zone_name is None:
            reply.header.rcode = RCODE.REFUSED
            return reply

        name = qname
        for _ in range(8):  # follow CNAMEs inside our data, with a bound against loops
            if qtype == "ANY":
                found = [(t, rrs) for (n, t), rrs in zone.records.items() if n == name]
                for t, rrs in found:
                    for ttl, rdata in rrs:
                        reply.add_answer(RR(name, getattr(QTYPE, t), ttl=ttl, rdata=rdata))
                break
            rrs = zone.records.get((name, qtype))
            if rrs:
                for ttl, rdata in rrs:
                    reply.add_answer(RR(name, request.q.qtype, ttl=ttl, rdata=rdata))
                break
            cname = zone.records.get((name, "CNAME"))
            if cname and qtype != "CNAME":
                ttl, rdata = cname[0]
                reply.add_answer(RR(name, QTYPE.CNAME, ttl=ttl, rdata=rdata))
                name = norm(rdata.label)
                if zone.zone_of(name) is None:
                    break
                continue
            if not reply.rr and not zone.name_exists(name):
                reply.header.rcode = RCODE.NXDOMAIN
            break

        if not reply.rr or (reply.rr and all(r.rtype == QTYPE.CNAME for r in reply.rr) and qtype != "CNAME"):
            reply.add_auth(self.soa(zone_name))
        return reply


class EdnsHandler(DNSHandler):
    """dnslib's handler, with UDP answers limited the way real servers limit them: 512 bytes, or
    the client's EDNS0 payload size (at most 4096). A larger answer goes out truncated (TC=1, no
    records) and the client retries over TCP, as it would against a real authoritative server."""

    def get_reply(self, data):
        request = DNSRecord.parse(data)
        self.server.logger.log_request(self, request)
        reply = self.server.resolver.resolve(request, self)
        opt = [r for r in request.ar if r.rtype == QTYPE.OPT]
        if opt:
            reply.add_ar(EDNS0(udp_len=4096))
        self.server.logger.log_reply(self, reply)
        rdata = reply.pack()
        if self.protocol == "udp":
            limit = min(max(opt[0].rclass, 512), 4096) if opt else 512
            if len(rdata) > limit:
                # dnslib's reply.truncate() drops the question too; keep it, as servers do.
                truncated = DNSRecord(
                    DNSHeader(id=reply.header.id, qr=1, aa=1, tc=1, rd=reply.header.rd), q=request.q
                )
                if opt:
                    truncated.add_ar(EDNS0(udp_len=4096))
                rdata = truncated.pack()
                self.server.logger.log_truncated(self, truncated)
        return rdata


class QuietLogger:
    """dnslib logs to stdout by default; stdout carries our {"port": N} line, so log to stderr
    (and only when asked)."""

    def __init__(self, verbose):
        self.verbose = verbose

    def _log(self, msg):
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def log_recv(self, handler, data):
        pass

    def log_send(self, handler, data):
        pass

    def log_request(self, handler, request):
        self._log(f"dns_server: {handler.protocol} {request.q.qname} {QTYPE[request.q.qtype]}")

    def log_reply(self, handler, reply):
        self._log(f"dns_server: -> {RCODE[reply.header.rcode]} {[str(r) for r in reply.rr]}")

    def log_truncated(self, handler, reply):
        self._log("dns_server: truncated (UDP)")

    def log_error(self, handler, e):
        print(f"dns_server: error: {e}", file=sys.stderr, flush=True)

    def log_data(self, dnsobj):
        pass


def bind_pair(resolver, logger, address, port):
    """UDP on `port` (0 = any free one), then TCP on the same number; retried when another
    process already holds that TCP port."""
    last = None
    for _ in range(50):
        udp = DNSServer(resolver, port=port, address=address, logger=logger, handler=EdnsHandler)
        p = udp.server.server_address[1]
        try:
            tcp = DNSServer(
                resolver, port=p, address=address, logger=logger, tcp=True, handler=EdnsHandler
            )
        except OSError as e:
            last = e
            udp.server.server_close()
            if port:
                break
            continue
        return udp, tcp, p
    raise SystemExit(f"dns_server: could not bind UDP+TCP on one port: {last}")


def stdin_is_devnull():
    try:
        return os.path.samestat(os.fstat(0), os.stat(os.devnull))
    except OSError:
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zone", required=True, help="JSON zone file (re-read when it changes)")
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="log queries to stderr")
    ap.add_argument("--ignore-stdin", action="store_true", help="do not exit on stdin EOF")
    args = ap.parse_args()

    resolver = ZoneResolver(args.zone)
    logger = QuietLogger(args.verbose)
    udp, tcp, port = bind_pair(resolver, logger, args.address, args.port)
    udp.start_thread()
    tcp.start_thread()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not args.ignore_stdin and not stdin_is_devnull():

        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    while not stop.wait(0.5):
        pass
    udp.stop()
    tcp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
