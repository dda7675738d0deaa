#!/usr/bin/env python3
"""ministack (PyPI) for the end-to-end tests: started on 127.0.0.1 with GATEWAY_PORT (a free
port) and BIND_HOST=127.0.0.1, ready once GET /_ministack/health answers. Prints {"port": N}
then, and stops ministack when stdin closes (the test process exited or died), so no emulator
outlives its tests. Its log goes to the file named by --log."""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GATEWAY_PORT=str(port), BIND_HOST="127.0.0.1")
    with open(args.log, "ab") as log:
        child = subprocess.Popen([sys.executable, "-m", "ministack.app"], env=env,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 cwd=os.path.dirname(args.log))
    try:
        deadline = time.monotonic() + 60
        while True:
            if child.poll() is not None:
                sys.exit(f"ministack exited with {child.returncode}; see {args.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ministack/health",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"ministack not healthy within 60 s; see {args.log}")
            time.sleep(0.1)
        print(json.dumps({"port": port}), flush=True)
        sys.stdin.read()
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    main()
