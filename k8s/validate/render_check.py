#!/usr/bin/env python3
"""Splits a rendered overlay and checks it against spine's deployment contract.

    render_check.py RENDERED.yaml OUTDIR

Writes OUTDIR/builtin.yaml (Kubernetes built-in kinds, for kubernetes-validate) and
OUTDIR/custom.yaml (the operators' custom resources, for validate.mjs). A resource of any
other API group lands in builtin.yaml, where kubernetes-validate fails on it for want of a
schema: nothing is skipped silently.

Then checks what holds for every workload whatever the service, and what no schema can: no
Secret is rendered (no secret value is committed) and every credential a container gets
(DATABASE_URL, *_USERNAME, *_PASSWORD) comes from a Secret by secretKeyRef, none from a
ConfigMap or a literal; logs are JSON wherever a ConfigMap sets their format; every Deployment runs non-root with a
read-only root filesystem, no privilege escalation, all capabilities dropped, no service
account token, probes, and resource requests and limits; every KafkaTopic belongs to the
cluster `spine` and keeps events 7 days and DLQs 14 days; every KEDA trigger reads the brokers
the services are configured with.

What is service-specific (env var names as real settings, ports, topics and partitions vs the
services' configuration, KEDA groups and topics, the alert rules) is checked against the code
itself by the Rust test tests/deploy (cargo nextest run -p spine-tests --test deploy).

Prints one line, `resources=N builtin=B custom=C`, or the problems (exit 1).
"""
import os
import sys

import yaml

CUSTOM_GROUPS = {"kafka.strimzi.io", "keda.sh", "monitoring.coreos.com"}

DAY_MS = 24 * 3600 * 1000


def is_credential(name):
    """A variable holding a secret: a database URL (it carries the password), a user name or a
    password."""
    return name == "DATABASE_URL" or name.endswith(("_USERNAME", "_PASSWORD"))


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    rendered, outdir = sys.argv[1:]
    with open(rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    problems = []

    def check(ok, message):
        if not ok:
            problems.append(message)

    builtin = [d for d in docs if d["apiVersion"].split("/")[0] not in CUSTOM_GROUPS]
    custom = [d for d in docs if d["apiVersion"].split("/")[0] in CUSTOM_GROUPS]
    os.makedirs(outdir, exist_ok=True)
    for name, subset in (("builtin.yaml", builtin), ("custom.yaml", custom)):
        with open(os.path.join(outdir, name), "w") as f:
            yaml.safe_dump_all(subset, f, sort_keys=False)

    def objects(kind):
        return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}

    check(not objects("Secret"), "a Secret is rendered: secret values must not be committed")
    brokers = set()
    for d in docs:
        if d["kind"] == "ConfigMap" and "KAFKA_BOOTSTRAP_SERVERS" in d.get("data", {}):
            brokers.add(d["data"]["KAFKA_BOOTSTRAP_SERVERS"])
    check(len(brokers) == 1, f"one KAFKA_BOOTSTRAP_SERVERS expected, found {sorted(brokers)}")

    for name, cm in objects("ConfigMap").items():
        for key, value in (cm.get("data") or {}).items():
            check(not is_credential(key), f"ConfigMap {name}: {key} is a credential: read it from a Secret")
            check(key != "SPINE__TELEMETRY__LOG_FORMAT" or value == "json",
                  f"ConfigMap {name}: SPINE__TELEMETRY__LOG_FORMAT={value}, expected json")

    for name, dep in objects("Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        where = f"Deployment {name}"
        for container in pod["containers"]:
            for env in container.get("env", []):
                check(not is_credential(env["name"])
                      or "secretKeyRef" in (env.get("valueFrom") or {}),
                      f"{where}: {env['name']} must come from a Secret (secretKeyRef)")
        psc = pod.get("securityContext", {})
        check(pod.get("automountServiceAccountToken") is False, f"{where}: token automounted")
        check(psc.get("runAsNonRoot") is True, f"{where}: pod must run as non-root")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
              f"{where}: pod seccompProfile must be RuntimeDefault")
        for container in pod["containers"]:
            csc = container.get("securityContext", {})
            check(csc.get("readOnlyRootFilesystem") is True
                  and csc.get("allowPrivilegeEscalation") is False
                  and csc.get("capabilities", {}).get("drop") == ["ALL"],
                  f"{where}: container securityContext too permissive")
            for probe in ("readinessProbe", "livenessProbe"):
                check(probe in container, f"{where}: {probe} missing")
            resources = container.get("resources", {})
            check("requests" in resources and "limits" in resources,
                  f"{where}: resource requests and limits missing")

    for name, topic in objects("KafkaTopic").items():
        spec = topic["spec"]
        topic_name = spec.get("topicName", name)
        days = 14 if topic_name.endswith(".dlq") else 7
        retention = int(spec.get("config", {}).get("retention.ms", -1))
        check(retention == days * DAY_MS, f"KafkaTopic {name}: retention.ms {retention}, expected {days} days")
        check(topic["metadata"].get("labels", {}).get("strimzi.io/cluster") == "spine",
              f"KafkaTopic {name}: label strimzi.io/cluster=spine missing")

    for name, so in objects("ScaledObject").items():
        for t in so["spec"].get("triggers", []):
            m = t.get("metadata", {})
            check(t.get("type") != "kafka" or {m.get("bootstrapServers")} == brokers,
                  f"ScaledObject {name}: bootstrapServers != KAFKA_BOOTSTRAP_SERVERS")
            check(t.get("type") != "kafka" or "lagThreshold" in m,
                  f"ScaledObject {name}: lagThreshold missing")

    if problems:
        for p in problems:
            print(f"contract: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"resources={len(docs)} builtin={len(builtin)} custom={len(custom)}")


if __name__ == "__main__":
    main()
