#!/usr/bin/env python3
"""Burst client for the crash test: N sessions (threads), each sending M messages over
STARTTLS + AUTH with Python smtplib. Prints one JSON line per acknowledged message, flushed the
moment the 250 arrives, so the test knows exactly what the relay acknowledged before it died:
    {"accepted": "<message-id>"}
A session that loses its connection stops quietly (the relay was killed); the script exits 0
when every session has stopped."""

import argparse
import json
import smtplib
import ssl
import sys
import threading
import time

lock = threading.Lock()


def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def session(args, index):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        client = smtplib.SMTP(args.host, args.port, timeout=30)
        client.starttls(context=context)
        client.login(args.user, args.password)
    except (OSError, smtplib.SMTPException) as error:
        emit({"session": index, "error": repr(error)})
        return
    for n in range(args.messages):
        message_id = f"<burst-{index}-{n}-{time.time_ns()}@acme.test>"
        body = (
            f"From: <{args.sender}>\r\nTo: <{args.rcpt}>\r\nSubject: burst {index}/{n}\r\n"
            f"Message-ID: {message_id}\r\n\r\n" + ("x" * 70 + "\r\n") * 30
        )
        try:
            client.sendmail(args.sender, [args.rcpt], body.encode())
        except (OSError, smtplib.SMTPException) as error:
            emit({"session": index, "error": repr(error)})
            return
        emit({"accepted": message_id})
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", dest="rcpt", required=True)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    threads = [threading.Thread(target=session, args=(args, i)) for i in range(args.sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
