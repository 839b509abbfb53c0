#!/usr/bin/env node
// Validates custom resources (Strimzi, KEDA, prometheus-operator) offline, against schemas
// generated from the upstream operators and shipped in the @kubernetes-models packages
// (package.json names the upstream versions). Used by scripts/check-k8s.
//
//   node validate.mjs FILE...                   every resource must be valid
//   node validate.mjs --expect-invalid FILE...  every resource must be INVALID (negative test)
//
// Two checks per resource; it is valid only if both pass:
//  1. schema: the model's own validate() (JSON schema compiled from the CRD or API types:
//     types, required fields, enums, patterns, bounds).
//  2. strict: unknown fields. The generated schemas accept undeclared properties, so this
//     check types the resource as an object literal of the model's TypeScript interface
//     (generated from the same schema) and lets the TypeScript compiler's excess-property
//     check reject any field the schema does not declare. Objects the schema leaves open
//     (x-kubernetes-preserve-unknown-fields, e.g. KafkaTopic spec.config; maps, e.g. labels)
//     are typed `{}` or as index signatures there, so their keys stay free, as in the API
//     server's strict field validation.
// A resource whose apiVersion/kind has no model here is an error, never skipped.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";
import ts from "typescript";
import { Kafka } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2/Kafka";
import { KafkaNodePool } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2/KafkaNodePool";
import { KafkaTopic } from "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2/KafkaTopic";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const HERE = path.dirname(fileURLToPath(import.meta.url));

const STRIMZI = "@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2";
const KEDA = "@kubernetes-models/keda/keda.sh/v1alpha1";
const PROM = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
// apiVersion/kind -> model class, the module of its TypeScript interface, the interface.
const MODELS = new Map(
  [
    [Kafka, `${STRIMZI}/Kafka`, "IKafka"],
    [KafkaNodePool, `${STRIMZI}/KafkaNodePool`, "IKafkaNodePool"],
    [KafkaTopic, `${STRIMZI}/KafkaTopic`, "IKafkaTopic"],
    [ScaledObject, `${KEDA}/ScaledObject`, "IScaledObject"],
    [ServiceMonitor, `${PROM}/ServiceMonitor`, "IServiceMonitor"],
    [PrometheusRule, `${PROM}/PrometheusRule`, "IPrometheusRule"],
  ].map(([model, module, iface]) => [`${model.apiVersion}/${model.kind}`, { model, module, iface }]),
);

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

// 1. Schema validation with each model's validate().
for (const r of resources) {
  const entry = MODELS.get(`${r.value.apiVersion}/${r.value.kind}`);
  if (!entry) {
    r.errors.push(`no schema for apiVersion ${r.value.apiVersion}, kind ${r.value.kind}`);
    continue;
  }
  r.entry = entry;
  try {
    new entry.model(r.value).validate();
  } catch (e) {
    r.errors.push(`schema: ${String(e.message ?? e).replace(/\s+/g, " ")}`);
  }
}

// 2. Unknown fields, with the TypeScript compiler (one in-memory source file per resource).
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
