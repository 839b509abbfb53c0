"""Counting from the outside and judging: every figure comes from a service's HTTP API, the SMTP
sink's own log or the topics, never from a service's database or logs.
"""

import re
from collections import Counter, defaultdict

from load import PLENTY, SCARCE, STOCK

FINAL = ("CONFIRMED", "REJECTED")
ORDER_IN_SUBJECT = re.compile(r"order ([0-9a-f-]{36})")
# A mail resent with the same Message-ID is the one documented duplicate window: the email
# process died between the SMTP server's accept and its own commit. Resends whose first
# delivery came this long before an abrupt death of an email process are that window.
KILL_WINDOW_S = 3.0


class Row:
    def __init__(self, section, what, expected, observed, ok, note=""):
        self.section, self.what = section, what
        self.expected, self.observed, self.ok, self.note = expected, observed, ok, note


class Verdict:
    def __init__(self):
        self.rows = []
        self.failures = []

    def add(self, section, what, expected, observed, ok=True, note=""):
        self.rows.append(Row(section, what, expected, observed, ok, note))
        if not ok:
            self.failures.append(f"{what}: expected {expected}, observed {observed}" + (f" ({note})" if note else ""))

    def info(self, section, what, observed, note=""):
        self.rows.append(Row(section, what, "", observed, None, note))

    def render(self):
        w_what = max(len(r.what) for r in self.rows)
        w_exp = max(len(str(r.expected)) for r in self.rows)
        w_obs = max(len(str(r.observed)) for r in self.rows)
        lines, section = [], None
        for r in self.rows:
            if r.section != section:
                section = r.section
                lines.append(f"-- {section}")
            mark = "  " if r.ok is None else ("ok" if r.ok else "XX")
            line = f"  {mark}  {r.what:<{w_what}}  {str(r.expected):>{w_exp}}  {str(r.observed):>{w_obs}}"
            if r.note:
                line += f"  {r.note}"
            lines.append(line.rstrip())
        header = f"      {'check':<{w_what}}  {'expected':>{w_exp}}  {'observed':>{w_obs}}"
        return "\n".join([header] + lines)


def judge(data):
    """`data`: the collected observations (see chaos.collect). Returns a Verdict."""
    v = Verdict()
    orders = data["orders"]  # list of load.Order
    views = data["views"]  # order id -> GET body, or None for a 404
    accepted = [o for o in orders if o.id]

    # -- orders
    lost = [o for o in accepted if views.get(o.id) is None]
    status = {o.id: (views.get(o.id) or {}).get("status") for o in accepted}
    confirmed = [o for o in accepted if status[o.id] == "CONFIRMED"]
    rejected = [o for o in accepted if status[o.id] == "REJECTED"]
    stuck = [o for o in accepted if views.get(o.id) is not None and status[o.id] not in FINAL]
    twice = [o for o in accepted if views.get(o.id)
             and sum(1 for h in views[o.id].get("history", []) if h.get("status") in FINAL) > 1]
    v.info("orders (orders' HTTP API)", "offered", len(orders))
    v.info("orders (orders' HTTP API)", "accepted (202)", len(accepted),
           f"{len(orders) - len(accepted)} never accepted" if len(orders) != len(accepted) else "")
    v.info("orders (orders' HTTP API)", "CONFIRMED / REJECTED", f"{len(confirmed)} / {len(rejected)}")
    v.add("orders (orders' HTTP API)", "lost (accepted, then 404)", 0, len(lost), not lost, _ids(lost))
    v.add("orders (orders' HTTP API)", "stuck (not final after settle)", 0, len(stuck), not stuck, _ids(stuck))
    v.add("orders (orders' HTTP API)", "decided twice (history)", 0, len(twice), not twice, _ids(twice))

    # -- emails
    by_rcpt = defaultdict(list)
    for m in data["mails"]:
        for r in m["rcpt"]:
            by_rcpt[r.lower()].append(m)
    final = confirmed + rejected
    none, different, wrong_template = [], [], []
    resends, resends_in_window, resent = 0, 0, []
    deaths = data["email_deaths"]  # times (unix) an email process died abruptly
    for o in final:
        mails = by_rcpt.get(o.email.lower(), [])
        ids = {m["message_id"] for m in mails}
        if not ids:
            none.append(o)
            continue
        if len(ids) > 1:
            different.append(o)
        want = "is confirmed" if status[o.id] == "CONFIRMED" else "could not be completed"
        if any(want not in m["subject"] or o.id not in m["subject"] for m in mails):
            wrong_template.append(o)
        seen = {}
        for m in sorted(mails, key=lambda m: m["t"]):
            if m["message_id"] in seen:
                resends += 1
                first = seen[m["message_id"]]
                if any(first - 0.5 <= d <= first + KILL_WINDOW_S for d in deaths):
                    resends_in_window += 1
                elif o not in resent:
                    resent.append(o)
            else:
                seen[m["message_id"]] = m["t"]
    known = {o.email.lower() for o in orders}
    strangers = sum(1 for r in by_rcpt if r not in known)
    unexplained = resends - resends_in_window
    s = "emails (the SMTP server's log)"
    v.info(s, "accepted by the SMTP server", len(data["mails"]))
    v.info(s, "final orders with exactly one mail", len(final) - len(none) - len(different),
           f"of {len(final)}")
    v.add(s, "final orders with no mail", 0, len(none), not none, _ids(none))
    v.add(s, "orders with two different mails", 0, len(different), not different, _ids(different))
    v.add(s, "mails not matching the outcome", 0, len(wrong_template), not wrong_template, _ids(wrong_template))
    v.add(s, "same mail sent twice (same Message-ID)", 0, unexplained, unexplained == 0,
          " ".join(filter(None, [
              _ids(resent),
              f"(+{resends_in_window} within {KILL_WINDOW_S:.0f} s of an email process's death: "
              "the documented window)" if resends_in_window else ""])))
    if strangers:
        v.info(s, "mails to unknown recipients", strangers)

    # -- analytics
    stats = data["analytics"] or {}
    events = stats.get("events", {})
    by_status = stats.get("orders_by_status", {})
    mailed = len(final) - len(none)
    s = "analytics (GET /stats)"
    for name, want in [
        ("OrderPlaced", len(accepted)),
        ("OrderConfirmed", len(confirmed)),
        ("OrderRejected", len(rejected)),
        ("StockReserved", len(confirmed)),
        ("StockReservationFailed", len(rejected)),
        ("EmailSent", mailed),
    ]:
        got = events.get(name, 0)
        v.add(s, f"{name} facts counted", want, got, got == want)
    for name, want in [("CONFIRMED", len(confirmed)), ("REJECTED", len(rejected))]:
        got = by_status.get(name, 0)
        v.add(s, f"orders {name}", want, got, got == want)

    # -- inventory
    s = "stock (inventory's HTTP API)"
    stock = data["stock"]
    want_reserved = {
        PLENTY: sum(i["quantity"] for o in confirmed for i in o.body["items"] if i["sku"] == PLENTY),
        SCARCE: sum(i["quantity"] for o in confirmed for i in o.body["items"] if i["sku"] == SCARCE),
    }
    for sku in (PLENTY, SCARCE):
        view = stock.get(sku) or {}
        got = view.get("reserved")
        v.add(s, f"{sku} reserved", want_reserved[sku], got, got == want_reserved[sku],
              f"{len(stuck)} orders not final may hold reservations" if stuck and got != want_reserved[sku] else "")
        total = (view.get("available") or 0) + (view.get("reserved") or 0)
        v.add(s, f"{sku} available + reserved", STOCK[sku], total, total == STOCK[sku])

    # -- DLQ
    s = "dead letters (<group>.dlq topics)"
    poison = data["poison"]  # (topic, partition, offset) of each garbage record
    for group, topics in data["group_topics"].items():
        records = data["dlq"].get(group, [])
        reasons = Counter(r["headers"].get("dlq-reason", b"?").decode() for r in records)
        injected = {tuple(p) for p in poison if p[0] in topics}
        got = set()
        other = []
        for r in records:
            h = r["headers"]
            if "chaos-poison" in h and h.get("dlq-reason") == b"poison":
                got.add((h.get("dlq-original-topic", b"").decode(),
                         int(h.get("dlq-original-partition", b"-1")),
                         int(h.get("dlq-original-offset", b"-1"))))
            else:
                other.append(r)
        missing = injected - got
        v.add(s, f"{group}: injected poison dead-lettered", len(injected), len(injected & got), not missing)
        detail = ", ".join(f"{k} {n}" for k, n in sorted(reasons.items()))
        v.add(s, f"{group}: anything else", 0, len(other), not other,
              _dlq_errors(other) or (f"by reason: {detail}" if records else ""))

    # -- the end state of the groups
    s = "consumer groups (committed offsets)"
    for group, lag in data["lag"].items():
        v.add(s, f"{group}: lag at the end", 0, "?" if lag is None else lag, lag == 0)

    # -- the edge during broker outages
    outage = data.get("broker_outage")
    if outage:
        s = "orders during broker outages"
        ready = sum(1 for code in outage["readiness"] if code == 200)
        v.add(s, "GET /readyz answered 200 (probes)", len(outage["readiness"]), ready,
              ready == len(outage["readiness"]), "readiness must not depend on the broker")
        refused = Counter(outage["refusals"])
        v.add(s, "POST /orders answered other than 202", 0, sum(refused.values()), not refused,
              ", ".join(f"{n}× {what}" for what, n in refused.most_common(3)))

    # -- process exits
    s = "processes"
    for name, n in sorted(Counter(e.name for e in data["unplanned"]).items()):
        v.info(s, f"{name}: exits not caused by a kill", n, "restarted (a panic or a Fatal error)")
    if not data["unplanned"]:
        v.info(s, "exits not caused by a kill", 0)
    if data.get("panic_unsupported"):
        v.info(s, "handler panics", "not injected", "these builds lack kafka.consumer.inject_panic_every")
    if data.get("panic_expected") and not data["unplanned"]:
        v.add(s, "injected panics that stopped a process", ">0", 0, False,
              "inject_panic_every was set, but no process exited")
    if data.get("rebalance_records") is not None:
        moved = sum(n or 0 for n in data["rebalance_records"].values())
        v.add(s, "records handled by the members added in the rebalance", ">0", moved, moved > 0,
              "" if moved else "no partition moved: the rebalance tested nothing")
    broken = data.get("broker_health")
    v.add("infrastructure", "our broker ran to the end without a panic", "yes", "no" if broken else "yes",
          not broken, f"{broken}: the figures above are the broker's failure, not the services'"
          if broken else "")
    if not data["settled"]:
        v.add("settle", "settled within the bound", "yes", "no", False, data.get("settle_note", ""))
    return v


def _ids(orders, limit=3):
    if not orders:
        return ""
    shown = ", ".join(o.id for o in orders[:limit])
    return f"e.g. {shown}" + (" …" if len(orders) > limit else "")


def _dlq_errors(records, limit=2):
    errors = Counter(
        (r["headers"].get("dlq-reason", b"?").decode(), r["headers"].get("dlq-error", b"").decode()[:70])
        for r in records
    )
    return "; ".join(f"{n}× {reason}: {err}" for (reason, err), n in errors.most_common(limit))
