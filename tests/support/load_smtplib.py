#!/usr/bin/env python3
"""Continuous load for crash tests: N sessions (threads) submitting over STARTTLS + AUTH with
Python smtplib until told to stop, across restarts of the relay.

The relay's address is read from its listeners file (`mailmux serve` writes
<data_dir>/listeners.json with a "submission" address; a restart binds a new port), again on
every reconnection. A session that loses its connection (the relay was killed) waits a moment
and reconnects; the message whose reply was lost is not counted, as a real client would retry it
with a new Message-ID.

Prints one JSON line per acknowledged message, flushed the moment the 250 arrives:
    {"accepted": "<message-id>"}
and {"session": i, "error": "..."} for each lost connection. Stops on SIGTERM or EOF on stdin
(sessions finish the transaction in progress, so no acknowledgement goes unreported), then
exits 0.
"""

import argparse
import json
import os
import signal
import smtplib
import ssl
import sys
import threading
import time

lock = threading.Lock()
stop = threading.Event()


def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def submission_address(listeners_file):
    """(host, port) of the relay's submission listener, or None while there is none."""
    try:
        with open(listeners_file) as f:
            host, _, port = json.load(f)["submission"].rpartition(":")
        return host, int(port)
    except (OSError, ValueError, KeyError):
        return None


def connect(args):
    address = submission_address(args.listeners_file)
    if address is None:
        raise ConnectionRefusedError("no listeners file yet")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = smtplib.SMTP(*address, timeout=args.timeout)
    try:
        client.starttls(context=context)
        client.login(args.user, args.password)
    except BaseException:
        client.close()
        raise
    return client


def session(args, index):
    n = 0
    client = None
    while not stop.is_set():
        try:
            if client is None:
                client = connect(args)
            message_id = f"<load-{index}-{n}-{time.time_ns()}@{args.sender.split('@')[-1]}>"
            n += 1
            body = (
                f"From: <{args.sender}>\r\nTo: <{args.rcpt}>\r\nSubject: load {index}/{n}\r\n"
                f"Message-ID: {message_id}\r\n\r\n" + ("x" * 70 + "\r\n") * (args.size // 72)
            )
            client.sendmail(args.sender, [args.rcpt], body.encode())
            emit({"accepted": message_id})
        except (OSError, smtplib.SMTPException) as error:
            emit({"session": index, "error": repr(error)})
            if client is not None:
                try:
                    client.close()
                except OSError:
                    pass
            client = None
            stop.wait(args.reconnect_ms / 1000.0)
    if client is not None:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners-file", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--from", dest="sender", required=True)
    parser.add_argument("--to", dest="rcpt", required=True)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--size", type=int, default=2160, help="body bytes, about")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--reconnect-ms", type=int, default=50)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin():
        # os.read, not sys.stdin: a daemon thread blocked in a buffered read holds its lock and
        # makes interpreter shutdown abort.
        try:
            while os.read(0, 4096):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    threads = [threading.Thread(target=session, args=(args, i)) for i in range(args.sessions)]
    for thread in threads:
        thread.start()
    # join() with a timeout: the main thread must stay free to run the SIGTERM handler.
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    sys.stdout.flush()
    # Skip interpreter shutdown: the stdin watcher may still be blocked in read().
    os._exit(0)


if __name__ == "__main__":
    main()
