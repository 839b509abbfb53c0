"""The fault suite (run it with scripts/chaos): the four services as separate processes on a
broker, a database and an SMTP server of the run's own, under a constant load of orders, with
faults injected mid-load one after another; then a bounded settle, counts taken from the
outside, one table and a verdict. Exits 1 when a guarantee broke, 2 when the run itself could
not be set up.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Broker, Postgres, Proc, Smtp, Supervisor, free_port, http_json  # noqa: E402
from kafka_side import GROUP_TOPICS, Tail, group_lag, read_dlqs  # noqa: E402
from load import STOCK, Load  # noqa: E402
from report import FINAL, judge  # noqa: E402

SERVICES = ["orders", "inventory", "email", "analytics"]
SCALED = ["email", "inventory"]  # the groups the rebalance scenario scales 1 -> 3 -> 1
FAST = ["kill-orders", "kill-inventory", "kill-email", "kill-analytics", "smtp-outage",
        "rebalance", "duplicates", "poison", "panic", "broker-freeze"]
FULL = FAST + ["broker-kill", "postgres-outage"]
# Scenarios that run through the whole load rather than in a slot of their own.
BACKGROUND = {"duplicates", "poison", "panic"}


def say(msg):
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, args):
        self.args = args
        chosen = args.only or (FULL if args.full else FAST)
        self.scenarios = [s for s in chosen if s not in (args.skip or [])]
        self.t0 = time.monotonic()
        self.work = tempfile.mkdtemp(prefix="spine-chaos-")
        os.chmod(self.work, 0o755)  # PostgreSQL runs as the OS user postgres when we are root
        self.sup = Supervisor(self.t0)
        self.broker = Broker(os.path.join(self.work, "broker"), durable=args.broker == "durable")
        self.postgres = Postgres(os.path.join(self.work, "postgres")) if args.db == "postgres" else None
        self.smtp = Smtp(self.sup, self.work)
        self.db_urls = {}
        self.ports = {}
        self.procs = {}  # service -> its main Proc
        self.injected = []  # (t, scenario, what)
        self.email_deaths = []  # unix times an email process died abruptly
        self.panic_every = {}
        self.rebalance_records = {}  # added member -> records it handled
        self.broker_outages = []  # (start, end) monotonic
        self.readiness = []  # orders' /readyz status codes during broker outages
        self.tail = None
        self.load = None

    def t(self):
        return time.monotonic() - self.t0

    def inject(self, scenario, what):
        self.injected.append((self.t(), scenario, what))
        say(f"+{self.t():6.1f}s [{scenario}] {what}")

    # -- setting up ------------------------------------------------------------------------
    def copy_binaries(self):
        # The target dir may be shared with other builds (CARGO_TARGET_DIR): run private copies,
        # so that a build finishing mid-run cannot swap a service's binary under a restart.
        bin_dir = os.path.join(self.work, "bin")
        os.makedirs(bin_dir)
        for s in SERVICES:
            shutil.copy2(os.path.join(self.args.bin_dir, s), bin_dir)
        self.bin_dir = bin_dir

    def start_infrastructure(self):
        self.copy_binaries()
        self.broker.start()
        if self.postgres:
            self.postgres.start(fresh=True)
            for s in SERVICES:
                self.db_urls[s] = self.postgres.create_database(f"chaos_{s}")
        else:
            for s in SERVICES:
                self.db_urls[s] = f"sqlite://{self.work}/{s}.db?mode=rwc"
        self.smtp.start()

    def service_env(self, service, port):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SPINE_", "OTEL_")) and k not in ("RUST_LOG", "DATABASE_URL")}
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.broker.bootstrap,
            DATABASE_URL=self.db_urls[service],
            SPINE_CONFIG_DIR=os.path.join(self.work, "no-config"),
            SPINE__HTTP__PORT=str(port),
            # CHAOS_LOG_FILTER=info keeps the services' INFO lines (rebalances, stalls) in
            # their logs, for a failure to be read afterwards.
            SPINE__TELEMETRY__LOG_FILTER=os.environ.get("CHAOS_LOG_FILTER", "warn"),
        )
        if service == "email":
            # A small in-flight bound, so that the slow provider of the rebalance scenario
            # fills it and the runner pauses its partitions before the rebalance.
            env["SPINE__KAFKA__CONSUMER__MAX_IN_FLIGHT"] = "32"
            # The SMTP timeout stays above the slow provider's 3-6 s answers (the default, 10 s):
            # a client that gives up after the data went out cannot know whether the server
            # took the mail, and its retry resends it (the documented SMTP window). A timeout
            # shorter than the server's answers tests that misconfiguration, not the kit.
            env.update(SPINE__EMAIL__TRANSPORT="smtp", SPINE__EMAIL__SMTP_HOST="127.0.0.1",
                       SPINE__EMAIL__SMTP_PORT=str(self.smtp.port))
        if service in self.panic_every:
            env["SPINE__KAFKA__CONSUMER__INJECT_PANIC_EVERY"] = str(self.panic_every[service])
        if self.args.max_rate:
            env["SPINE__KAFKA__CONSUMER__MAX_RATE"] = str(self.args.max_rate)
        return env

    def spawn(self, service, member=""):
        port = free_port()
        name = service + member
        proc = Proc(name, [os.path.join(self.bin_dir, service)], self.service_env(service, port),
                    os.path.join(self.work, f"{name}.log"), cwd=self.work)
        self.sup.add(proc)
        return proc, port

    def start_services(self):
        if "panic" in self.scenarios:
            if self.supports_panic_injection():
                self.panic_every = {"inventory": self.args.panic_every, "analytics": self.args.panic_every * 2}
            else:
                self.inject("panic", "NOT INJECTED: these builds have no kafka.consumer.inject_panic_every")
        for s in SERVICES:
            self.procs[s], self.ports[s] = self.spawn(s)
        self.sup.begin()
        for s in SERVICES:
            if not wait_for(lambda s=s: http_json(self.url(s, "/readyz"))[0] == 200, 90):
                raise SetupError(f"{s} did not become ready (log: {self.work}/{s}.log)")
        for sku, quantity in STOCK.items():
            status, _ = http_json(self.url("inventory", f"/stock/{sku}"), "PUT", {"quantity": quantity})
            if status != 200:
                raise SetupError(f"PUT /stock/{sku} answered {status}")
        if self.panic_every:
            self.inject("panic", "handler panics injected: inventory every "
                        f"{self.panic_every['inventory']}th record, analytics every "
                        f"{self.panic_every['analytics']}th (SPINE__KAFKA__CONSUMER__INJECT_PANIC_EVERY)")

    def supports_panic_injection(self):
        with open(os.path.join(self.bin_dir, "inventory"), "rb") as f:
            return b"inject_panic_every" in f.read()

    def url(self, service, path):
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def warm_up(self):
        """Three orders through the whole flow first: tansu's first group join is slow."""
        warm = Load(self.ports["orders"], rate=3, duration=1, first=1_000_000)
        warm.start()
        warm.join(40)
        done = lambda: all(  # noqa: E731
            (http_json(self.url("orders", f"/orders/{o.id}"))[1] or {}).get("status") in FINAL
            for o in warm.accepted()
        ) and len(self.smtp.messages()) >= len(warm.accepted()) > 0
        if not wait_for(done, 90):
            raise SetupError("three warm-up orders did not complete within 90 s")
        return warm

    # -- the faults ------------------------------------------------------------------------
    def timeline(self):
        """(slot seconds, scenario, action): each fault has a slot of its own, then recovery."""
        steps = []
        for s in SERVICES:
            if f"kill-{s}" in self.scenarios:
                steps.append((7, f"kill-{s}", lambda s=s: self.kill(s)))
        if "smtp-outage" in self.scenarios:
            steps.append((self.args.smtp_outage + 8, "smtp-outage", self.smtp_outage))
        if "rebalance" in self.scenarios:
            steps.append((3 + 15 + 6 + 10, "rebalance", self.rebalance))
        if "broker-freeze" in self.scenarios:
            steps.append((10 + 12, "broker-freeze", self.broker_freeze))
        if "postgres-outage" in self.scenarios:
            steps.append((10 + 12, "postgres-outage", self.postgres_outage))
        # Last: the durable tansu 0.6.0 itself has been seen to panic after this one (in its
        # idempotent-producer check); the run then names the broker's failure in the table.
        if "broker-kill" in self.scenarios:
            steps.append((5 + 20, "broker-kill", self.broker_kill))
        return steps

    def kill(self, service):
        proc = self.procs[service]
        pid = proc.pid
        if service == "email":
            self.email_deaths.append(time.time())
        self.sup.kill9(proc)
        self.inject(f"kill-{service}", f"kill -9 {service} (pid {pid}); the supervisor restarts it")

    def smtp_outage(self):
        self.smtp.stop()
        self.inject("smtp-outage", f"SMTP server stopped for {self.args.smtp_outage} s (connection refused)")
        time.sleep(self.args.smtp_outage)
        self.smtp.start()
        self.inject("smtp-outage", "SMTP server back")

    def rebalance(self):
        # A slow provider (as in the report) keeps mails in flight on the members
        # that lose partitions: what a rebalance must neither resend nor drop. One member at
        # a time, up and down: four rebalances of each group.
        self.smtp.slow(3000, 6000)
        self.inject("rebalance", "SMTP made slow (3-6 s a mail) for the rebalance")
        time.sleep(3)
        added = []
        for member in ("-2", "-3"):
            step = [self.spawn(s, member) for s in SCALED]
            added += step
            self.inject("rebalance", f"email and inventory groups scaled up to {len(added) // 2 + 1} "
                        "members (same database)")
            # At least 6 s, and until the new members took partitions and handled records (a
            # first join on tansu waits out the rebalance timeout; the durable build is slower).
            time.sleep(6)
            wait_for(lambda: all((records_handled(port) or 0) > 0 for _, port in step), 30, every=1)
        time.sleep(3)
        # What the added members did, from their own /metrics: a rebalance that moved no
        # partition would test nothing.
        for proc, port in added:
            self.rebalance_records[proc.name] = records_handled(port)
        self.inject("rebalance", "records handled by the added members: " + ", ".join(
            f"{name} {n}" for name, n in self.rebalance_records.items()))
        for member in ("-3", "-2"):
            leaving = [proc for proc, _ in added if proc.name.endswith(member)]
            for p in leaving:
                p.wanted = False
                if p.alive():
                    p.popen.terminate()
            for p in leaving:
                self.sup.terminate(p, timeout=20)
            self.inject("rebalance", f"scaled down to {int(member[1:]) - 1} (SIGTERM)")
            time.sleep(3)
        self.smtp.fast()
        self.inject("rebalance", "SMTP fast again")

    def broker_freeze(self):
        self.broker.signal(signal.SIGSTOP)
        self.inject("broker-freeze", "broker frozen (SIGSTOP) for 10 s")
        self.broker_outage(10)
        self.broker.signal(signal.SIGCONT)
        self.inject("broker-freeze", "broker resumed (SIGCONT)")

    def broker_kill(self):
        self.broker.kill9()
        self.inject("broker-kill", "broker killed (kill -9)")
        self.broker_outage(3)
        self.broker.start()
        self.inject("broker-kill", "broker restarted on the same durable storage")

    def broker_outage(self, seconds):
        """Sleeps through a broker outage, probing orders' readiness each second: the outbox
        exists to take orders while the broker is away, so orders must stay in its Service."""
        start, probes = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            self.readiness.append(http_json(self.url("orders", "/readyz"), timeout=3)[0])
            probes += 1
            sleep_until(start + probes)
        self.broker_outages.append((start, time.monotonic()))

    def postgres_outage(self):
        # At 20 orders/s little is in flight at any moment, and orders refuses new ones while
        # its database is down: a burst just before the stop makes every consumer busy when
        # the database goes away.
        self.load.burst(200)
        self.inject("postgres-outage", "a burst of 200 orders")
        time.sleep(1.5)
        self.postgres.stop()
        self.inject("postgres-outage", "PostgreSQL stopped (pg_ctl stop -m fast) for 10 s")
        time.sleep(10)
        self.postgres.start()
        self.inject("postgres-outage", "PostgreSQL started again")

    # -- the run ---------------------------------------------------------------------------
    def run(self):
        say(f"scenarios: {', '.join(self.scenarios)}; work dir {self.work}")
        self.start_infrastructure()
        self.start_services()
        warm = self.warm_up()
        steps = self.timeline()
        lead, tail = 5, 5
        # Always read the topics (that is how the run knows where they end); duplicate and poison
        # when asked.
        self.tail = Tail(self.broker.bootstrap, "duplicates" in self.scenarios,
                         100 if "poison" in self.scenarios else 0)
        self.tail.start()
        if "duplicates" in self.scenarios:
            self.inject("duplicates", "every record of the three event topics produced a second time")
        if "poison" in self.scenarios:
            self.inject("poison", "one undecodable record (a real order's key) after every 100 records")
        load = self.load = Load(self.ports["orders"], rate=self.args.rate, duration=None)
        load.start()
        say(f"load: {self.args.rate:g} orders/s through {len(steps)} faults")
        start = time.monotonic()
        at = lead
        for slot, _, action in steps:
            sleep_until(start + at)
            action()
            # A fault that took longer than its slot (a slow group join) shifts the rest.
            at = max(at + slot, time.monotonic() - start)
        sleep_until(start + at + tail)
        load.finish()
        load.join(60)
        orders = warm.orders + load.orders
        settled, note = self.settle(orders)
        return self.collect(orders, settled, note)

    def settle(self, orders):
        """Waits (bounded) until every accepted order is final, every group has committed up to
        the end of its topics and no new record came for 3 s, twice in a row."""
        say(f"load done; settling (at most {self.args.settle_timeout} s)")
        deadline = time.monotonic() + self.args.settle_timeout
        pending = {o.id for o in orders if o.id}
        previous, note = None, ""
        while time.monotonic() < deadline:
            with ThreadPoolExecutor(8) as pool:
                views = dict(zip(pending, pool.map(
                    lambda i: http_json(self.url("orders", f"/orders/{i}"))[1], list(pending))))
            pending = {i for i, v in views.items() if not (v and v.get("status") in FINAL)}
            ends = self.tail.ends()
            lag = group_lag(self.broker.bootstrap, ends)
            caught_up = self.tail.quiet_for() >= 3
            note = f"{len(pending)} orders not final, lag {lag}"
            if not pending and caught_up and all(v == 0 for v in lag.values()) and ends == previous:
                say(f"settled in {time.monotonic() - (deadline - self.args.settle_timeout):.0f} s")
                return True, ""
            previous = ends if not pending and caught_up else None
            time.sleep(2)
        return False, note

    def collect(self, orders, settled, note):
        self.tail.close()
        lag = group_lag(self.broker.bootstrap, self.tail.ends())
        accepted = [o for o in orders if o.id]
        with ThreadPoolExecutor(8) as pool:
            views = dict(zip([o.id for o in accepted], pool.map(
                lambda o: self._view(o.id), accepted)))
        stock = {sku: http_json(self.url("inventory", f"/stock/{sku}"))[1] for sku in STOCK}
        analytics = http_json(self.url("analytics", "/stats"))[1]
        dlq = read_dlqs(self.broker.bootstrap, list(GROUP_TOPICS))
        for e in self.sup.events:
            if e.name.startswith("email") and "UNPLANNED" in e.what:
                self.email_deaths.append(time.time() - (self.sup.now() - e.t))
        return {
            "orders": orders,
            "views": views,
            "mails": self.smtp.messages(),
            "email_deaths": self.email_deaths,
            "analytics": analytics,
            "stock": stock,
            "dlq": dlq,
            "poison": self.tail.poison,
            "group_topics": GROUP_TOPICS,
            "lag": lag,
            "unplanned": self.sup.unplanned(),
            "panic_expected": bool(self.panic_every),
            "panic_unsupported": "panic" in self.scenarios and not self.panic_every,
            "rebalance_records": self.rebalance_records if "rebalance" in self.scenarios else None,
            "broker_outage": {
                "readiness": self.readiness,
                "refusals": [what for t, what in self.load.refusals
                             if any(a <= t <= b for a, b in self.broker_outages)],
            } if self.broker_outages else None,
            "settled": settled,
            "settle_note": note,
            "broker_health": self.broker.health(),
        }

    def _view(self, order_id):
        for _ in range(5):
            status, body = http_json(self.url("orders", f"/orders/{order_id}"))
            if status in (200, 404):
                return body if status == 200 else None
            time.sleep(1)
        return {"status": "UNREADABLE"}

    def close(self):
        self.sup.close()
        self.broker.close()
        if self.postgres:
            self.postgres.close()


def records_handled(port):
    """spine_consumer_records_total summed over its labels, from a service's /metrics."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("spine_consumer_records_total")))


class SetupError(Exception):
    pass


def wait_for(check, timeout, every=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


def sleep_until(when):
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def main():
    p = argparse.ArgumentParser(prog="scripts/chaos", description="The fault suite: faults "
                                "injected into the four services under load, then counted.")
    p.add_argument("--full", action="store_true", help="add the durable broker kill and the "
                   "PostgreSQL outage, with the services on PostgreSQL")
    p.add_argument("--only", action="append", choices=FULL, metavar="SCENARIO",
                   help=f"run only this scenario (repeatable): {', '.join(FULL)}")
    p.add_argument("--skip", action="append", choices=FULL, metavar="SCENARIO",
                   help="leave this scenario out (repeatable), e.g. --full --broker fast --skip "
                   "broker-kill")
    p.add_argument("--bin-dir", required=True, help=argparse.SUPPRESS)  # set by scripts/chaos
    p.add_argument("--rate", type=float, default=20, help="orders per second (default 20)")
    p.add_argument("--max-rate", type=float, default=0,
                   help="kafka.consumer.max_rate of every consumer, records/s (default 0: off)")
    p.add_argument("--smtp-outage", type=int, default=30, help="seconds (default 30)")
    p.add_argument("--panic-every", type=int, default=2500,
                   help="inventory's injected panic period in records (analytics: twice that)")
    p.add_argument("--settle-timeout", type=int, default=None, help="seconds (default 90, full 180)")
    p.add_argument("--db", choices=["sqlite", "postgres"], default=None,
                   help="the services' database (default sqlite; postgres with --full)")
    p.add_argument("--broker", choices=["fast", "durable"], default=None,
                   help="tansu build (default fast; durable with --full)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs) even on success")
    args = p.parse_args()
    chosen = [s for s in (args.only or (FULL if args.full else FAST)) if s not in (args.skip or [])]
    needs_pg = args.full or "postgres-outage" in chosen
    needs_durable = "broker-kill" in chosen
    args.db = args.db or ("postgres" if needs_pg else "sqlite")
    args.broker = args.broker or ("durable" if needs_durable else "fast")
    args.settle_timeout = args.settle_timeout or (180 if args.full else 90)
    if needs_pg and args.db != "postgres":
        p.error("postgres-outage needs --db postgres")
    if needs_durable and args.broker != "durable":
        p.error("broker-kill needs --broker durable: a killed fast (memory) broker loses every topic")

    run = Run(args)
    # SIGTERM and SIGINT end the run through the finally below, which stops every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    code, keep = 2, True
    try:
        data = run.run()
        verdict = judge(data)
        print(render(run, verdict), flush=True)
        code = 1 if verdict.failures else 0
        keep = args.keep or bool(verdict.failures)
    except SetupError as err:
        say(f"setup failed: {err}")
    except KeyboardInterrupt:
        say("interrupted")
        code = 130
    except Exception:  # a bug of the suite itself: say so, keep the logs
        traceback.print_exc()
    finally:
        run.close()
        if keep:
            say(f"logs and state kept in {run.work}")
        else:
            shutil.rmtree(run.work, ignore_errors=True)
    sys.exit(code)


def render(run, verdict):
    lines = ["", "== fault suite: what was injected (and what the supervisor saw)"]
    happened = [(t, scenario, what) for t, scenario, what in run.injected]
    happened += [(e.t, "(supervisor)", f"{e.name}: {e.what}") for e in run.sup.events]
    for t, scenario, what in sorted(happened, key=lambda h: h[0]):
        lines.append(f"  +{t:6.1f}s  {scenario:<16} {what}")
    lines.append("")
    lines.append(f"== fault suite: counted from the outside ({run.args.db}, {run.args.broker} broker, "
                 f"{run.args.rate:g} orders/s)")
    lines.append(verdict.render())
    lines.append("")
    checks = sum(1 for r in verdict.rows if r.ok is not None)
    failed = len(verdict.failures)
    if verdict.failures:
        lines.append(f"== verdict: FAIL ({failed} of {checks} checks)")
        lines.extend(f"  - {f}" for f in verdict.failures)
    else:
        lines.append("== verdict: PASS (no accepted order lost or stuck, one mail each, effects once, "
                     "only the injected poison dead-lettered)")
    lines.append(f"faults: {checks - failed} passed, {failed} failed")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
