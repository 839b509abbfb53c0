"""A test SMTP server on aiosmtpd: stores each accepted message as DIR/<n>.eml (with an
X-Envelope-To header line first), answers 451 to the first --fail-first attempts of each recipient
(appending a line to DIR/<recipient>.451 each time), and 550 to recipients starting with
"bounce". Prints READY once listening; runs until killed."""

import argparse
import os
import sys
import threading
import time

try:
    from aiosmtpd.controller import Controller
except ImportError:
    print("aiosmtpd is missing: python3 -m pip install aiosmtpd", file=sys.stderr)
    sys.exit(3)


class Handler:
    def __init__(self, directory, fail_first):
        self.directory = directory
        self.fail_first = fail_first
        self.failed = {}
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("bounce"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            key = ",".join(envelope.rcpt_tos)
            if self.failed.get(key, 0) < self.fail_first:
                self.failed[key] = self.failed.get(key, 0) + 1
                with open(os.path.join(self.directory, key + ".451"), "a") as f:
                    f.write("451\n")
                return "451 4.3.0 try again later"
            self.count += 1
            n = self.count
        tmp = os.path.join(self.directory, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(("X-Envelope-To: " + ",".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, f"{n}.eml"))
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    controller = Controller(
        Handler(args.dir, args.fail_first), hostname="127.0.0.1", port=args.port
    )
    controller.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
