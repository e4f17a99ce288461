// Validates prometheus-operator objects (ServiceMonitor, PrometheusRule) that kubernetes-validate
// has no schema for, against the JSON schemas that @kubernetes-models/prometheus-operator generates
// from the prometheus-operator CRDs (types, enums, required fields, duration patterns).
//
//   node scripts/validate-monitoring.mjs MODELS_DIR < objects.jsonl
//
// MODELS_DIR is a directory with node_modules/@kubernetes-models/prometheus-operator installed
// (scripts/chart-check.sh installs it into its cache). stdin has one JSON object per line.
// Objects of other kinds are an error: the caller picks what to send. Exit status 1 when any object
// is invalid. Like the API server (which prunes unknown fields rather than refusing them), the
// CRD schemas do not reject unknown fields; the chart's own checks cover its field names.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
if (!dir) {
  console.error("usage: node validate-monitoring.mjs MODELS_DIR < objects.jsonl");
  process.exit(2);
}
const base = join(dir, "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const models = {};
for (const kind of ["ServiceMonitor", "PrometheusRule"]) {
  models[`monitoring.coreos.com/v1/${kind}`] = (await import(pathToFileURL(join(base, `${kind}.js`)).href))[kind];
}

let failed = 0;
let count = 0;
for (const line of readFileSync(0, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const obj = JSON.parse(line);
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const Model = models[`${obj.apiVersion}/${obj.kind}`];
  count++;
  if (!Model) {
    console.log(`ERROR ${name}: no prometheus-operator schema for ${obj.apiVersion} ${obj.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok    ${name} (${obj.apiVersion}, prometheus-operator CRD schema)`);
  } catch (e) {
    console.log(`ERROR ${name}: ${e.message}`);
    failed++;
  }
}
if (count === 0) {
  console.log("ERROR no object on stdin");
  process.exit(1);
}
process.exit(failed ? 1 : 0);
