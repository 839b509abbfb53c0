#!/usr/bin/env node
// Validates custom resources (Strimzi, KEDA, prometheus-operator) offline, against the
// upstream operators' schemas, unknown fields rejected. Used by scripts/check-k8s.
//
//   node validate.mjs FILE...                   every resource must be valid
//   node validate.mjs --expect-invalid FILE...  every resource must be INVALID (negative test)
//
// Where the schemas come from (package.json's "upstreamSchemas" names the versions):
//  - Strimzi (kafka.strimzi.io): the CRDs of a Strimzi release, vendored in
//    crds/strimzi-<release>.json (crds/vendor_strimzi.py writes it from the release's own
//    install/cluster-operator/*-Crd-*.yaml). Only the versions that release serves are in it,
//    so a resource of a removed API version (v1beta2 since Strimzi 1.0) is rejected. Each
//    resource is checked with Ajv against its version's openAPIV3Schema, made strict the way
//    the API server's strict field validation is: an object schema that lists its properties
//    rejects any other (additionalProperties: false), unless it is marked
//    x-kubernetes-preserve-unknown-fields (e.g. KafkaTopic spec.config). metadata is checked
//    against the ObjectMeta fields below. CEL rules (x-kubernetes-validations; three in the
//    Kafka CRD, on rack and metricsConfig, which spine does not use) are not evaluated.
//  - KEDA and prometheus-operator: the @kubernetes-models packages, two checks per resource,
//    valid only if both pass:
//     1. schema: the model's own validate() (JSON schema compiled from the CRD or API types:
//        types, required fields, enums, patterns, bounds).
//     2. strict: unknown fields. The generated schemas accept undeclared properties, so this
//        check types the resource as an object literal of the model's TypeScript interface
//        (generated from the same schema) and lets the TypeScript compiler's excess-property
//        check reject any field the schema does not declare. Objects the schema leaves open
//        (maps, e.g. labels or a trigger's metadata) are typed as index signatures there, so
//        their keys stay free, as in the API server's strict field validation.
// A resource whose apiVersion/kind has no schema here is an error, never skipped.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { parseAllDocuments } from "yaml";
import ts from "typescript";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const HERE = path.dirname(fileURLToPath(import.meta.url));

const KEDA = "@kubernetes-models/keda/keda.sh/v1alpha1";
const PROM = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
// apiVersion/kind -> model class, the module of its TypeScript interface, the interface.
const MODELS = new Map(
  [
    [ScaledObject, `${KEDA}/ScaledObject`, "IScaledObject"],
    [ServiceMonitor, `${PROM}/ServiceMonitor`, "IServiceMonitor"],
    [PrometheusRule, `${PROM}/PrometheusRule`, "IPrometheusRule"],
  ].map(([model, module, iface]) => [`${model.apiVersion}/${model.kind}`, { model, module, iface }]),
);

// The Strimzi release whose CRDs are vendored in crds/ (keep in step with package.json and
// the READMEs).
const STRIMZI_RELEASE = "1.2.0";
const STRIMZI = JSON.parse(
  readFileSync(path.join(HERE, "crds", `strimzi-${STRIMZI_RELEASE}.json`), "utf8"),
);
const STRIMZI_GROUP = "kafka.strimzi.io";

// What a custom resource's metadata may hold (ObjectMeta's writable fields), so that a typo
// there (`label:`) is rejected too. The CRDs themselves only say `type: object`.
const STRING_MAP = { type: "object", additionalProperties: { type: "string" } };
const OBJECT_META = {
  type: "object",
  required: ["name"],
  additionalProperties: false,
  properties: {
    name: { type: "string", minLength: 1 },
    generateName: { type: "string" },
    namespace: { type: "string" },
    labels: STRING_MAP,
    annotations: STRING_MAP,
    finalizers: { type: "array", items: { type: "string" } },
    ownerReferences: { type: "array", items: { type: "object" } },
  },
};

// The schema made strict (see the header): additionalProperties: false on every object
// schema that lists its properties, unless the schema keeps unknown fields.
function strict(schema) {
  if (Array.isArray(schema)) return schema.map(strict);
  if (schema === null || typeof schema !== "object") return schema;
  const out = Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, strict(v)]));
  if (
    out.type === "object" &&
    out.properties !== undefined &&
    out.additionalProperties === undefined &&
    out["x-kubernetes-preserve-unknown-fields"] !== true
  ) {
    out.additionalProperties = false;
  }
  return out;
}

// allErrors: report every problem of a resource, not only the first.
const ajv = new Ajv({ allErrors: true, strict: false });
for (const keyword of [
  "x-kubernetes-int-or-string", // the schema's anyOf [integer, string] says the same
  "x-kubernetes-preserve-unknown-fields", // honoured by strict() above
  "x-kubernetes-validations", // CEL, not evaluated (see the header)
  "x-kubernetes-list-type",
  "x-kubernetes-list-map-keys",
  "x-kubernetes-map-type",
]) {
  ajv.addKeyword({ keyword });
}
// apiVersion/kind -> compiled validator, for every version the vendored release serves.
const CRDS = new Map(
  Object.entries(STRIMZI.schemas).map(([key, schema]) => {
    const [group, version, kind] = key.split("/");
    const strictSchema = strict(schema);
    strictSchema.properties.metadata = OBJECT_META;
    return [`${group}/${version}/${kind}`, ajv.compile(strictSchema)];
  }),
);
const SERVED = [...new Set([...CRDS.keys()].map((k) => k.split("/").slice(0, 2).join("/")))];

// One Ajv error as `spec.kafka.listeners[0].type: must be equal to one of the allowed values`.
function ajvMessage(error) {
  const where = error.instancePath
    .split("/")
    .slice(1)
    .map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p.replace(/~1/g, "/").replace(/~0/g, "~")}`))
    .join("")
    .replace(/^\./, "");
  let what = error.message ?? error.keyword;
  if (error.keyword === "additionalProperties") {
    what = `unknown field ${JSON.stringify(error.params.additionalProperty)}`;
  } else if (error.keyword === "enum") {
    what += ` ${JSON.stringify(error.params.allowedValues)}`;
  }
  return `${where || "(resource)"}: ${what}`;
}

function usage(message) {
  console.error(`validate.mjs: ${message}\nusage: node validate.mjs [--expect-invalid] FILE...`);
  process.exit(2);
}

const args = process.argv.slice(2);
const expectInvalid = args[0] === "--expect-invalid";
const files = expectInvalid ? args.slice(1) : args;
if (files.length === 0) usage("no input files");

// Every YAML document of every file, with a label for messages.
const resources = [];
for (const file of files) {
  const text = readFileSync(file, "utf8");
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) usage(`${file}: YAML error: ${doc.errors[0].message}`);
    const value = doc.toJS();
    if (value === null || value === undefined) continue;
    const meta = value.metadata ?? {};
    const where = meta.namespace ? `${meta.namespace}/` : "";
    resources.push({ file, value, label: `${value.kind}/${where}${meta.name ?? "?"}`, errors: [] });
  }
}

// 1. Schema validation: Strimzi's against the vendored CRDs, the rest with each model's
// validate().
for (const r of resources) {
  const key = `${r.value.apiVersion}/${r.value.kind}`;
  const crd = CRDS.get(key);
  if (crd) {
    if (!crd(r.value)) {
      for (const e of crd.errors) r.errors.push(`schema (Strimzi ${STRIMZI_RELEASE} CRD): ${ajvMessage(e)}`);
    }
    continue;
  }
  const entry = MODELS.get(key);
  if (!entry) {
    const group = String(r.value.apiVersion ?? "").split("/")[0];
    let why = "";
    if (group === STRIMZI_GROUP) {
      why = SERVED.includes(r.value.apiVersion)
        ? `: the vendored Strimzi ${STRIMZI_RELEASE} CRDs have no such kind`
        : `: Strimzi ${STRIMZI_RELEASE} serves ${SERVED.join(", ")} only`;
    }
    r.errors.push(`no schema for apiVersion ${r.value.apiVersion}, kind ${r.value.kind}${why}`);
    continue;
  }
  r.entry = entry;
  try {
    new entry.model(r.value).validate();
  } catch (e) {
    r.errors.push(`schema: ${String(e.message ?? e).replace(/\s+/g, " ")}`);
  }
}

// 2. Unknown fields in the @kubernetes-models resources, with the TypeScript compiler (one in-memory source file per resource).
const checked = resources.filter((r) => r.entry);
if (checked.length > 0) {
  const sources = new Map();
  checked.forEach((r, i) => {
    r.tsFile = path.join(HERE, "__strict__", `r${i}.ts`);
    const text =
      `import type { ${r.entry.iface} } from "${r.entry.module}";\n` +
      `export const resource: ${r.entry.iface} = ${JSON.stringify(r.value, null, 2)};\n`;
    sources.set(r.tsFile, text);
  });
  const options = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options, true);
  const { getSourceFile, fileExists, readFile } = host;
  host.fileExists = (f) => sources.has(path.resolve(f)) || fileExists.call(host, f);
  host.readFile = (f) => sources.get(path.resolve(f)) ?? readFile.call(host, f);
  host.getSourceFile = (f, lang, ...rest) => {
    const text = sources.get(path.resolve(f));
    return text !== undefined
      ? ts.createSourceFile(f, text, lang, true)
      : getSourceFile.call(host, f, lang, ...rest);
  };
  const program = ts.createProgram([...sources.keys()], options, host);
  for (const r of checked) {
    const sf = program.getSourceFile(r.tsFile);
    const diags = [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)];
    for (const d of diags) {
      const text = ts.flattenDiagnosticMessageText(d.messageText, " ");
      // Only the first line of TypeScript's message; the field path says where.
      const short = text.replace(/\s+/g, " ").slice(0, 300);
      r.errors.push(`strict: ${fieldPath(sf, d.start)}: ${short}`);
    }
  }
}

// The JSON path (spec.endpoints[0].relabelings) of the node at `pos` in the generated source.
function fieldPath(sf, pos) {
  if (pos === undefined) return "(resource)";
  let node = sf;
  for (;;) {
    const child = node.getChildren(sf).find((c) => c.getStart(sf) <= pos && pos < c.getEnd());
    if (!child) break;
    node = child;
  }
  const parts = [];
  for (let n = node; n && n !== sf; n = n.parent) {
    if (ts.isPropertyAssignment(n)) parts.unshift(`.${n.name.text ?? n.name.getText(sf)}`);
    else if (n.parent && ts.isArrayLiteralExpression(n.parent)) {
      parts.unshift(`[${n.parent.elements.indexOf(n)}]`);
    }
  }
  return parts.join("").replace(/^\./, "") || "(resource)";
}

// Report.
const counts = {};
let failures = 0;
for (const r of resources) {
  counts[r.value.kind] = (counts[r.value.kind] ?? 0) + 1;
  const invalid = r.errors.length > 0;
  if (expectInvalid) {
    if (invalid) console.log(`rejected as expected: ${r.label} (${r.file}): ${r.errors[0]}`);
    else {
      failures++;
      console.error(`NOT REJECTED: ${r.label} (${r.file}) passed validation but must fail`);
    }
  } else if (invalid) {
    failures++;
    for (const e of r.errors) console.error(`INVALID ${r.label} (${r.file}): ${e}`);
  }
}
const summary = Object.entries(counts)
  .sort()
  .map(([k, n]) => `${k} ${n}`)
  .join(", ");
if (failures > 0) {
  console.error(
    expectInvalid
      ? `validate.mjs: ${failures} of ${resources.length} broken resources were not rejected`
      : `validate.mjs: ${failures} of ${resources.length} custom resources invalid`,
  );
  process.exit(1);
}
console.log(
  expectInvalid
    ? `validate.mjs: all ${resources.length} broken resources rejected (${summary})`
    : `validate.mjs: ${resources.length} custom resources valid (${summary})`,
);
