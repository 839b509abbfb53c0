"""The fault suite's SMTP server, on aiosmtpd: accepts every message and appends one JSON line
per accepted message to --log: {"t": unix seconds, "rcpt": [...], "message_id": "...",
"subject": "..."}. The line is written and flushed before the 250 reply, so a message the
client saw accepted is always in the log (the suite counts mails from this file alone).

While the file --delay-file exists, each DATA is answered after a uniformly random delay
between the two numbers of milliseconds it holds ("1000 3000"): a slow provider, so that mails
are still in flight when the suite rebalances the email group.

Prints READY once listening; SIGTERM or SIGINT stops it (the suite's SMTP outage: the port is
closed, so clients get "connection refused", then a new instance is started on the same port
and appends to the same log).
"""

import argparse
import asyncio
import email.parser
import email.policy
import json
import os
import random
import signal
import sys
import threading
import time

try:
    from aiosmtpd.controller import Controller
except ImportError:
    print("aiosmtpd is missing: scripts/setup installs it", file=sys.stderr)
    sys.exit(3)


class LoggingHandler:
    def __init__(self, path, delay_file):
        self.delay_file = delay_file
        self.out = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)

    async def handle_DATA(self, server, session, envelope):
        if self.delay_file and os.path.exists(self.delay_file):
            try:
                low, high = (int(x) for x in open(self.delay_file).read().split())
                await asyncio.sleep(random.uniform(low, high) / 1000)
            except (OSError, ValueError):
                pass
        headers = self.parser.parsebytes(envelope.original_content or envelope.content)
        line = json.dumps(
            {
                "t": time.time(),
                "rcpt": list(envelope.rcpt_tos),
                "message_id": (headers.get("Message-ID") or "").strip(),
                "subject": " ".join((headers.get("Subject") or "").split()),
            }
        )
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()
        return "250 OK"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--delay-file")
    args = parser.parse_args()
    handler = LoggingHandler(args.log, args.delay_file)
    controller = Controller(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.wait(0.5):
        pass
    controller.stop()


if __name__ == "__main__":
    main()
