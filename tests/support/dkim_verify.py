#!/usr/bin/env python3
"""Independent DKIM verifier for mailmux's end-to-end tests: dkimpy checks every DKIM-Signature
of each message file, fetching the public keys from the test DNS server on loopback.

    dkim_verify.py --dns 127.0.0.1:PORT FILE.eml [FILE.eml ...]

Prints one JSON object per file, one per line:

    {"file": "...", "signatures": [{"d": "acme.test", "s": "mm202607", "a": "rsa-sha256",
      "c": "relaxed/relaxed", "h": "From:To:...", "pass": true, "error": null}, ...]}

A message with no signature has an empty list. Exit status 0 unless a file cannot be read.
dkimpy is the verifier; only the DNS lookup is ours (TXT over TCP to the given server, so long
keys are never truncated), so the test checks mailmux against an implementation it shares no
code with.
"""

import argparse
import json
import sys

import dkim
from dkim.util import parse_tag_value
from dnslib import QTYPE, DNSRecord


def make_dnsfunc(host, port):
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        question = DNSRecord.question(name.rstrip("."), "TXT")
        reply = DNSRecord.parse(question.send(host, port, tcp=True, timeout=timeout))
        for rr in reply.rr:
            if rr.rtype == QTYPE.TXT:
                return b"".join(rr.rdata.data)
        return None

    return dnsfunc


def signatures(message):
    """The DKIM-Signature fields of the header section, in order (top first), unfolded."""
    head = message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b"\t").replace(b"\r\n ", b" ")
    out = []
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"dkim-signature":
            out.append(value)
    return out


def check(path, dnsfunc):
    with open(path, "rb") as f:
        message = f.read()
    results = []
    for idx, value in enumerate(signatures(message)):
        try:
            tags = parse_tag_value(value)
        except Exception as e:  # noqa: BLE001 - report whatever dkimpy refuses
            results.append({"pass": False, "error": f"unparsable signature: {e}"})
            continue
        text = {k.decode(): v.decode(errors="replace") for k, v in tags.items()}
        entry = {
            "d": text.get("d"),
            "s": text.get("s"),
            "a": text.get("a"),
            "c": text.get("c"),
            "h": "".join(text.get("h", "").split()),
            "pass": False,
            "error": None,
        }
        verifier = dkim.DKIM(message, minkey=1024, timeout=5)
        try:
            entry["pass"] = bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException as e:
            entry["error"] = str(e)
        results.append(entry)
    return {"file": path, "signatures": results}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dns", required=True, help="HOST:PORT of the DNS server holding the keys")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    host, _, port = args.dns.rpartition(":")
    dnsfunc = make_dnsfunc(host, int(port))
    for path in args.files:
        print(json.dumps(check(path, dnsfunc)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
