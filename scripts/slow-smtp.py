"""A slow, flaky SMTP provider for the benchmark (scripts/bench-spike), on aiosmtpd.

Each DATA is answered after a uniformly random 300-800 ms (--min-ms, --max-ms); a share of them
(--fail-rate, 0.1) get a transient `451 4.3.0` instead of 250, as a throttling provider would.
Messages are counted, not stored. Every second, and at exit, the counts are written as JSON to
--stats: {"accepted", "transient_failures", "sessions"}. Prints READY once listening; runs until
killed (SIGTERM or SIGINT). --backlog sets the listen queue (100, asyncio's default): hundreds of
clients connecting at once overflow a short queue, and a connection dropped from it hangs the
client until its timeout.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading

try:
    from aiosmtpd.controller import Controller
except ImportError:
    print("aiosmtpd is missing: scripts/setup installs it", file=sys.stderr)
    sys.exit(3)


class BacklogController(Controller):
    """aiosmtpd's Controller with the listen queue's length given."""

    def __init__(self, *args, backlog, **kwargs):
        super().__init__(*args, **kwargs)
        self.backlog = backlog

    def _create_server(self):
        return self.loop.create_server(
            self._factory_invoker,
            host=self.hostname,
            port=self.port,
            ssl=self.ssl_context,
            backlog=self.backlog,
        )


class SlowFlakyHandler:
    def __init__(self, min_ms, max_ms, fail_rate):
        self.min_s, self.max_s, self.fail_rate = min_ms / 1000, max_ms / 1000, fail_rate
        self.counts = {"accepted": 0, "transient_failures": 0, "sessions": 0}
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.counts["sessions"] += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(random.uniform(self.min_s, self.max_s))
        failed = random.random() < self.fail_rate
        with self.lock:
            self.counts["transient_failures" if failed else "accepted"] += 1
        return "451 4.3.0 try again later" if failed else "250 OK"

    def write(self, path):
        with self.lock:
            text = json.dumps(self.counts)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--min-ms", type=int, default=300)
    parser.add_argument("--max-ms", type=int, default=800)
    parser.add_argument("--fail-rate", type=float, default=0.1)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--backlog", type=int, default=100)
    args = parser.parse_args()
    handler = SlowFlakyHandler(args.min_ms, args.max_ms, args.fail_rate)
    controller = BacklogController(
        handler, hostname="127.0.0.1", port=args.port, backlog=args.backlog
    )
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("READY", flush=True)
    while not stop.wait(1.0):
        handler.write(args.stats)
    controller.stop()
    handler.write(args.stats)


if __name__ == "__main__":
    main()
