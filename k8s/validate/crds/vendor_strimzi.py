#!/usr/bin/env python3
"""Writes strimzi-<release>.json: the served versions' schemas of the Strimzi CRDs that spine's
manifests use, taken from a Strimzi release's own CRD files, for validate.mjs.

    vendor_strimzi.py RELEASE COMMIT CRD.yaml... > strimzi-RELEASE.json

The CRD files are a release's install/cluster-operator/04*-Crd-*.yaml (in the strimzi-kafka-
operator repository at the release's tag). Only what validation needs is kept: for each
served version, its openAPIV3Schema without `description`s (documentation only) and without
`status` (written by the operator, never by us). Everything else, types, required fields,
enums, patterns, bounds, oneOf/anyOf, x-kubernetes-* markers, is copied as it is.
"""
import json
import sys

import yaml

KINDS = ("Kafka", "KafkaNodePool", "KafkaTopic")


def strip(schema):
    """The schema without descriptions, recursively."""
    if isinstance(schema, dict):
        return {k: strip(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [strip(v) for v in schema]
    return schema


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    release, commit, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    schemas = {}
    for path in files:
        with open(path) as f:
            crd = yaml.safe_load(f)
        kind = crd["spec"]["names"]["kind"]
        if kind not in KINDS:
            continue
        group = crd["spec"]["group"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = strip(version["schema"]["openAPIV3Schema"])
            schema.get("properties", {}).pop("status", None)
            schemas[f"{group}/{version['name']}/{kind}"] = schema
    missing = [k for k in KINDS if not any(key.endswith(f"/{k}") for key in schemas)]
    if missing:
        sys.exit(f"vendor_strimzi.py: no CRD for {missing} in {files}")
    out = {
        "source": (f"Strimzi {release} (strimzi/strimzi-kafka-operator tag {release}, commit {commit}), "
                   "install/cluster-operator CRDs; served versions only, descriptions and status "
                   "removed by k8s/validate/crds/vendor_strimzi.py"),
        "release": release,
        "schemas": dict(sorted(schemas.items())),
    }
    json.dump(out, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
