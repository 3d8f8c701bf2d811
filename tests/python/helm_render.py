"""Renders and lints the chart with the real Helm engine (helm-python-sdk,
which embeds Helm v4's Go SDK) and validates every rendered object, for
tests/tests/helm.rs.

    helm_render.py CHART  < cases.json  > result.json

cases.json: [{"name": ..., "values_files": [paths relative to CHART],
"set": {extra values}}, ...]. For each case the result holds either
"error" (the render failed: Helm's message) or "objects" (every rendered
object, parsed), "notes" (NOTES.txt), "lint" (findings of warning severity
and above from `helm lint --strict` with the same values) and "invalid"
(every validation failure); "alert_rules" is rules/modelgate-alerts.yaml
parsed. The Rust test asserts on the objects' fields.

Kubernetes' own kinds are validated with kubernetes-validate in strict mode
(unknown fields are errors, as `kubernetes-validate --strict`) against the
newest two Kubernetes versions it knows. The Prometheus Operator's kinds are
CRDs, not in its schemas: they are validated with the models that
cloudcoil-models-prometheus-operator generates from the operator's CRD
schemas; a field those models do not know is dropped when parsed, so an
object that does not survive the round trip unchanged has an unknown field.
"""

import json
import os
import sys

import helm_python as helm
import kubernetes_validate.utils as kv
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring
from packaging.version import Version

CRD_MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}


def newest_kube_versions(n=2):
    versions = sorted({Version(v) for v in kv.all_versions()})
    return [str(v) for v in versions[-n:]]


def unknown_fields(given, kept, path):
    """Paths in `given` that the round trip through the model lost."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        lost = []
        for key, value in given.items():
            here = f"{path}.{key}" if path else key
            if key not in kept:
                lost.append(here)
            else:
                lost.extend(unknown_fields(value, kept[key], here))
        return lost
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [path]
        lost = []
        for i, (g, k) in enumerate(zip(given, kept)):
            lost.extend(unknown_fields(g, k, f"{path}[{i}]"))
        return lost
    return []


def validate(obj, kube_versions):
    """Validation failures of one object, as strings; [] when it is valid."""
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    model = CRD_MODELS.get((obj.get("apiVersion"), obj.get("kind")))
    if model is not None:
        try:
            kept = model.model_validate(obj).model_dump(by_alias=True, exclude_unset=True, mode="json")
        except Exception as e:  # pydantic's ValidationError names the field
            return [f"{where}: {e}"]
        return [f"{where}: unknown field {p}" for p in unknown_fields(obj, kept, "")]
    failures = []
    for version in kube_versions:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            failures.append(f"{where} against Kubernetes {version}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            # A kind with no schema is a failure here, not the CLI's warning.
            failures.append(f"{where}: {e.message}")
    return failures


def render_case(chart_dir, chart, case, kube_versions):
    values = {}
    for rel in case.get("values_files", []):
        with open(os.path.join(chart_dir, rel)) as f:
            loaded = yaml.safe_load(f) or {}
        values = merge(values, loaded)
    values = merge(values, case.get("set", {}))
    result = {"name": case["name"]}
    try:
        rendered = chart.render(values, name="mg", namespace="ml", is_install=True)
    except helm.HelmError as e:
        result["error"] = str(e)
        return result
    objects, notes = [], ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                objects.append({"template": path, "object": doc})
    invalid = []
    for o in objects:
        invalid.extend(validate(o["object"], kube_versions))
    report = helm.lint(chart_dir, values, strict=True, namespace="ml", kube_version="v" + kube_versions[-1])
    lint = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    result.update(objects=objects, notes=notes, invalid=invalid, lint=lint)
    return result


def merge(base, over):
    """Helm's values merge: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def main():
    chart_dir = sys.argv[1]
    cases = json.load(sys.stdin)
    kube_versions = newest_kube_versions()
    chart = helm.Chart.load(chart_dir)
    out = {
        "helm_sdk": helm.helm_sdk_version(),
        "kube_versions": kube_versions,
        # What the PrometheusRule must carry, parsed the same way.
        "alert_rules": yaml.safe_load(open(os.path.join(chart_dir, "rules/modelgate-alerts.yaml"))),
        "cases": [render_case(chart_dir, chart, c, kube_versions) for c in cases],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
