// Validate ServiceMonitor and PrometheusRule objects (a JSON array on stdin) against the Prometheus
// Operator's schemas (@kubernetes-models/prometheus-operator, generated from its Go API types).
// Prints a JSON array: one {kind, name, error} per object, error null when it is valid.
import { readFileSync } from "node:fs";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const models = { PrometheusRule, ServiceMonitor };
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = objects.map((object) => {
  const Model = models[object.kind];
  let error = Model ? null : `no schema for kind ${object.kind}`;
  if (Model) {
    try {
      new Model(object).validate();
    } catch (exc) {
      error = String(exc.message);
    }
  }
  return { kind: object.kind, name: object.metadata?.name, error };
});
process.stdout.write(JSON.stringify(results));
