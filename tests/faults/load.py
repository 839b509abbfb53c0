"""The fault run's own load: orders at a constant rate, each with a unique recipient, so every
mail and every reservation can be traced back to the order that caused it.

A POST is retried with the same Idempotency-Key while orders is down or shedding (bounded),
so a 202 is the one and only "accepted" signal: an order counts as accepted exactly when
some POST of it got a 202 with an id.
"""

import http.client
import itertools
import json
import queue
import threading
import time

# Plenty of one SKU, a little of another: orders holding a SCARCE line are confirmed until it
# runs out and rejected after, so the run has both outcomes and an exact stock balance.
PLENTY, SCARCE = "CHAOS-PLENTY", "CHAOS-SCARCE"
STOCK = {PLENTY: 10_000_000, SCARCE: 150}
SCARCE_EVERY = 5  # every 5th order holds a SCARCE line


def order_body(n):
    items = [{"sku": PLENTY, "quantity": 1 + n % 3, "unit_price_minor": 250}]
    if n % SCARCE_EVERY == 0:
        items.append({"sku": SCARCE, "quantity": 1, "unit_price_minor": 1000})
    return {
        "customer_id": f"chaos-{n}",
        "email": f"c{n}@chaos.example",
        "currency": "EUR",
        "items": items,
    }


class Order:
    def __init__(self, n):
        self.n = n
        self.body = order_body(n)
        self.email = self.body["email"]
        self.id = None  # set by the 202
        self.attempts = 0
        self.last_error = None


class Load:
    """Offers `rate` orders a second to orders at `port`, for `duration` seconds or, when it is
    None, until `finish()`."""

    def __init__(self, port, rate, duration, first=0, give_up_after=30.0, workers=24):
        self.port, self.rate, self.duration = port, rate, duration
        self.numbers = itertools.count(first)
        self.numbers_lock = threading.Lock()
        self.give_up_after = give_up_after
        self.orders = []
        self.refusals = []  # (monotonic time, HTTP status or error name) of every non-202
        self.jobs = queue.Queue()
        self.stop = threading.Event()  # abandon everything (the run is interrupted)
        self.enough = threading.Event()  # offer no more orders; finish those under way
        self.workers = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]
        self.pacer = threading.Thread(target=self._pace, daemon=True)

    def start(self):
        for w in self.workers:
            w.start()
        self.pacer.start()

    def _pace(self):
        start = time.monotonic()
        total = None if self.duration is None else int(self.rate * self.duration)
        n = 0
        while total is None or n < total:
            delay = start + n / self.rate - time.monotonic()
            if self.stop.is_set() or (delay > 0 and self.enough.wait(delay)) or self.enough.is_set():
                break
            self._offer()
            n += 1
        for _ in self.workers:
            self.jobs.put(None)

    def _offer(self):
        with self.numbers_lock:
            order = Order(next(self.numbers))
            self.orders.append(order)
        self.jobs.put(order)

    def burst(self, count):
        """Offers `count` orders at once, on top of the constant rate."""
        for _ in range(count):
            self._offer()

    def _work(self):
        while True:
            order = self.jobs.get()
            if order is None:
                return
            self._place(order)

    def _place(self, order):
        deadline = time.monotonic() + self.give_up_after
        payload = json.dumps(order.body)
        headers = {"content-type": "application/json", "idempotency-key": f"chaos-{order.n}"}
        backoff = 0.2
        while time.monotonic() < deadline and not self.stop.is_set():
            order.attempts += 1
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", "/orders", payload, headers)
                response = conn.getresponse()
                body = response.read()
                conn.close()
                if response.status == 202:
                    order.id = json.loads(body)["id"]
                    return
                order.last_error = f"HTTP {response.status}"
                self.refusals.append((time.monotonic(), order.last_error))
                if response.status < 500:
                    return  # a 4xx is our bug, not a fault; reported as not accepted
            except (OSError, http.client.HTTPException, ValueError) as err:
                order.last_error = type(err).__name__
                self.refusals.append((time.monotonic(), order.last_error))
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def finish(self):
        self.enough.set()

    def join(self, timeout):
        self.pacer.join(timeout)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            w.join(max(0.1, deadline - time.monotonic()))

    def accepted(self):
        return [o for o in self.orders if o.id]

    def rejected_by_api(self):
        return [o for o in self.orders if not o.id]
