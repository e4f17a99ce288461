#!/usr/bin/env python3
"""Checks what the Helm chart renders against what the operator needs (used by chart-check.sh).

    scripts/chart-assertions.py RENDER.yaml VALUES.yaml [--namespace NS] [--binary IMAGEBLOAT]

RENDER.yaml is `helm template` output for the values file VALUES.yaml (layered over the chart's
values.yaml here, as helm does) in namespace NS (default imagebloat). With --binary, every flag
the Deployment passes must be one that `IMAGEBLOAT run --help` documents.

What is checked (each failure is printed; exit status 1 when any):
  - restricted Pod Security on the Pod and the container; probes on the metrics port; the image;
    the downward-API environment; resources; a rollout strategy that never has two writers, and
    the PodDisruptionBudget with more than one replica;
  - the `imagebloat run` arguments built from the values, with no flag given twice unless the
    operator accepts it repeatedly;
  - RBAC: the ClusterRole's rules are exactly the expected set (see EXPECTED_RULES: any widening
    fails here and must be deliberate), the pull-secret mode, the Lease Role, and the read-only
    ClusterRole aggregated into the built-in view/edit/admin roles;
  - Service, ServiceMonitor, NetworkPolicy and dashboard ConfigMap wiring (selectors, port names,
    labels, the dashboard JSON is the chart file's);
  - the PrometheusRule's alerts, labels and annotations.
"""

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "imagebloat"

# The ClusterRole, verb by verb, as the operator uses the API (src/operator/): (group, resource) ->
# verbs. Secrets only with rbac.secrets=cluster; extra workload kinds from rbac.extraWorkloadRules.
EXPECTED_RULES = {
    ("", "pods"): {"get", "list", "watch"},
    ("", "nodes"): {"list", "watch"},
    ("", "serviceaccounts"): {"get"},
    ("apps", "replicasets"): {"get", "list", "watch"},
    ("batch", "jobs"): {"get", "list", "watch"},
    ("apps", "deployments"): {"get"},
    ("apps", "statefulsets"): {"get"},
    ("apps", "daemonsets"): {"get"},
    ("batch", "cronjobs"): {"get"},
    ("imagebloat.dev", "imagereports"): {"list", "watch", "create", "patch"},
    ("imagebloat.dev", "imagereports/status"): {"patch"},
    ("imagebloat.dev", "clusterimagereports"): {"list", "create", "patch", "delete"},
    ("imagebloat.dev", "clusterimagereports/status"): {"patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
# Flags the operator accepts more than once.
REPEATABLE = {"--insecure-registry", "--mirror", "--ca-file"}
ALERTS = {
    "oversizedImage": "ImageBloatOversizedImage",
    "highlyReclaimable": "ImageBloatHighlyReclaimable",
    "lowEfficiency": "ImageBloatLowEfficiency",
    "analysesFailing": "ImageBloatAnalysesFailing",
    "imageGrew": "ImageBloatImageGrew",
    "operatorAbsent": "ImageBloatOperatorAbsent",
}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def merge(base, override):
    """Helm's coalescing of a values file over the chart's values (maps merge, the rest replaces)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def rules_of(role):
    """(group, resource, resourceNames) -> verbs."""
    out = {}
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                key = (group, resource, tuple(rule.get("resourceNames", [])))
                out.setdefault(key, set()).update(rule.get("verbs", []))
    return out


def flags_of(args):
    """--flag=value / --flag value / --flag -> [(flag, value or None)] (args[0] is the subcommand)."""
    out = []
    i = 1
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                flag, value = a.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                flag, value = a, args[i + 1]
                i += 1
            else:
                flag, value = a, None
            out.append((flag, value))
        else:
            failures.append(f"unexpected positional argument {a!r}")
        i += 1
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("render")
    parser.add_argument("values")
    parser.add_argument("--namespace", default="imagebloat")
    parser.add_argument("--binary")
    opts = parser.parse_args()

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = merge(
        yaml.safe_load((CHART / "values.yaml").read_text()),
        yaml.safe_load(Path(opts.values).read_text()) or {},
    )
    ns = opts.namespace
    docs = [d for d in yaml.safe_load_all(Path(opts.render).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        labels = d["metadata"].get("labels", {})
        if d["kind"] != "CustomResourceDefinition":
            check(labels.get("app.kubernetes.io/managed-by") == "Helm", f"{d['kind']}/{d['metadata']['name']}: no managed-by label")
            check(labels.get("app.kubernetes.io/name") == "imagebloat", f"{d['kind']}/{d['metadata']['name']}: no name label")

    def one(kind):
        items = by_kind.get(kind, [])
        check(len(items) == 1, f"expected one {kind}, got {len(items)}")
        return items[0] if items else {}

    # --- Deployment -----------------------------------------------------------------------------
    deploy = one("Deployment")
    pod = deploy["spec"]["template"]["spec"]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    check(deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), "Deployment selector does not match its Pod labels")
    check(deploy["spec"]["replicas"] == values["replicaCount"], "replicas differ from replicaCount")
    leader = values["leaderElection"]["enabled"] or values["replicaCount"] > 1
    strategy = deploy["spec"].get("strategy", {})
    if leader:
        check(strategy.get("type") == "RollingUpdate" and strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0,
              f"with leader election the rollout must surge a standby first, got {strategy}")
    else:
        check(strategy == {"type": "Recreate"}, f"without leader election a rollout must not have two writers (Recreate), got {strategy}")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    want_pdb = values["podDisruptionBudget"]["enabled"] and values["replicaCount"] > 1
    check(bool(pdbs) == want_pdb, f"PodDisruptionBudget present={bool(pdbs)}, expected {want_pdb}")
    for pdb in pdbs:
        check(pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), "PodDisruptionBudget does not select the operator Pods")
        check(pdb["spec"].get("maxUnavailable") == values["podDisruptionBudget"]["maxUnavailable"], "PodDisruptionBudget maxUnavailable")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, "Pod: runAsNonRoot is not true")
    check(psc.get("runAsUser") == 65532, "Pod: runAsUser is not 65532")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "Pod: seccompProfile is not RuntimeDefault")
    check(not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), "Pod: host namespaces")
    for v in pod.get("volumes", []):
        check("hostPath" not in v, f"Pod: hostPath volume {v['name']}")
    check(pod.get("automountServiceAccountToken") is True, "Pod: the API token is not mounted")
    (container,) = pod["containers"]
    csc = container.get("securityContext", {})
    check(csc.get("allowPrivilegeEscalation") is False, "container: allowPrivilegeEscalation is not false")
    check(csc.get("readOnlyRootFilesystem") is True, "container: readOnlyRootFilesystem is not true")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "container: capabilities are not drop [ALL]")
    check(not csc.get("capabilities", {}).get("add"), "container: adds capabilities")
    check(csc.get("runAsNonRoot") is True and csc.get("runAsUser") == 65532, "container: not non-root 65532")
    check(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "container: seccompProfile is not RuntimeDefault")
    check(not csc.get("privileged"), "container: privileged")
    port = values["metrics"]["port"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    check(ports.get("metrics") == port, f"container: port 'metrics' is not {port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        check(get.get("path") == path and get.get("port") in ("metrics", port), f"container: {probe} is not GET {path} on the metrics port")
    res = container.get("resources", {})
    check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"),
          "container: resources lack cpu/memory requests or a memory limit")
    tag = values["image"]["tag"] or chart["appVersion"]
    expected_image = f"{values['image']['repository']}:{tag}"
    if values["image"]["digest"]:
        expected_image += "@" + values["image"]["digest"]
    check(container["image"] == expected_image, f"image is {container['image']}, expected {expected_image}")
    if not values["image"]["tag"] and not values["image"]["digest"] and values["image"]["repository"] == "ghcr.io/imagebloat/imagebloat":
        check(container["image"] == f"ghcr.io/imagebloat/imagebloat:{chart['appVersion']}", "default image is not ghcr.io/imagebloat/imagebloat:<appVersion>")
    env = {e["name"]: e for e in container.get("env", [])}
    check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", "env POD_NAME is not the downward API's metadata.name")
    check(env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace", "env POD_NAMESPACE is not metadata.namespace")

    args = container.get("args", [])
    check(args[:1] == ["run"], "args do not start with the `run` subcommand")
    flags = flags_of(args)
    seen = {}
    for flag, value in flags:
        seen.setdefault(flag, []).append(value)
    for flag, vals in seen.items():
        check(len(vals) == 1 or flag in REPEATABLE, f"flag {flag} given {len(vals)} times: the operator refuses that")
    first = {f: v[0] for f, v in seen.items()}
    op = values["operator"]
    check(first.get("--metrics-addr") == f"0.0.0.0:{port}", "--metrics-addr is not 0.0.0.0:<metrics.port>")
    check(first.get("--namespaces") == (",".join(op["namespaces"]) or None), "--namespaces does not match operator.namespaces")
    check(first.get("--exclude-namespaces") == (",".join(op["excludeNamespaces"]) or None), "--exclude-namespaces does not match")
    check(seen.get("--insecure-registry", []) == op["insecureRegistries"], "--insecure-registry does not match")
    check(seen.get("--mirror", []) == op["mirrors"], "--mirror does not match")
    check(first.get("--platform") == op["platform"], "--platform does not match")
    check(first.get("--concurrency") == str(op["concurrency"]), "--concurrency does not match")
    check(first.get("--per-registry-concurrency") == str(op["perRegistryConcurrency"]), "--per-registry-concurrency does not match")
    for key, flag in (("timeoutSeconds", "--timeout"), ("requestTimeoutSeconds", "--request-timeout"),
                      ("analysisTimeoutSeconds", "--analysis-timeout"), ("maxLayerEntries", "--max-layer-entries")):
        check(first.get(flag) == str(op[key]), f"{flag} is {first.get(flag)!r}, expected {op[key]!r}")
    for key in ("maxLayerBytes", "maxLayerPathBytes", "layerCache"):
        flag = {"maxLayerBytes": "--max-layer-bytes", "maxLayerPathBytes": "--max-layer-path-bytes", "layerCache": "--layer-cache"}[key]
        want = op[key] if isinstance(op[key], str) else str(int(op[key]))
        check(first.get(flag) == want, f"{flag} is {first.get(flag)!r}, expected {want!r}")
    growth = first.get("--growth-threshold")
    check(growth is not None and float(growth) == float(op["growthThreshold"]),
          f"--growth-threshold is {growth!r}, expected {op['growthThreshold']!r}")
    lease_name = values["leaderElection"]["leaseName"] or f"{deploy['metadata']['name']}-leader"
    check(("--leader-elect" in seen) == leader, f"--leader-elect present={'--leader-elect' in seen}, expected {leader}")
    if leader:
        check(first.get("--lease-namespace") == ns, "--lease-namespace is not the release namespace")
        check(first.get("--lease-name") == lease_name, "--lease-name does not match")
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if values["registryConfig"]["existingSecret"]:
        check(first.get("--registry-config") == "/etc/imagebloat/registry/config.json", "--registry-config missing")
        m = mounts.get("/etc/imagebloat/registry")
        check(m and m.get("readOnly"), "registry config is not mounted read-only")
        if m:
            vol = volumes.get(m["name"], {}).get("secret", {})
            check(vol.get("secretName") == values["registryConfig"]["existingSecret"], "registry config volume names another Secret")
            check({"key": values["registryConfig"]["key"], "path": "config.json"} in vol.get("items", []), "registry config key is not mounted as config.json")
    else:
        check("--registry-config" not in seen, "--registry-config without registryConfig.existingSecret")
    ca_files = seen.get("--ca-file", [])
    check(len(ca_files) == len(values["caCertificates"]), "one --ca-file per caCertificates entry expected")
    for entry, path in zip(values["caCertificates"], ca_files):
        directory = f"/etc/imagebloat/ca/{entry['name']}"
        check(path == f"{directory}/{entry['key']}", f"--ca-file {path} for {entry['name']}")
        m = mounts.get(directory)
        check(m and m.get("readOnly"), f"CA {entry['name']} not mounted read-only at {directory}")
        if m:
            src = volumes.get(m["name"], {})
            ref = src.get("configMap", {}).get("name") if "configMap" in entry else src.get("secret", {}).get("secretName")
            check(ref == entry.get("configMap", entry.get("secret")), f"CA {entry['name']} volume names another object")

    if opts.binary:
        help_text = subprocess.run([opts.binary, "run", "--help"], capture_output=True, text=True, check=True).stdout
        known = set(re.findall(r"(--[a-z][-a-z]*)", help_text))
        for flag in seen:
            check(flag in known, f"{flag} is not a flag of `imagebloat run` ({opts.binary})")

    # --- RBAC -----------------------------------------------------------------------------------
    sa_name = pod.get("serviceAccountName")
    if values["serviceAccount"]["create"]:
        sa = one("ServiceAccount")
        check(sa["metadata"]["name"] == sa_name, "ServiceAccount name differs from the Pod's")
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in by_kind.get(kind, []):
            check(b["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}], f"{kind}/{b['metadata']['name']}: subjects are not the operator's ServiceAccount")
    if values["rbac"]["create"]:
        view_name = f"{deploy['metadata']['name']}-view"
        views = [r for r in by_kind.get("ClusterRole", []) if r["metadata"]["name"] == view_name]
        operator_roles = [r for r in by_kind.get("ClusterRole", []) if r["metadata"]["name"] != view_name]
        check(len(operator_roles) == 1, f"expected one operator ClusterRole, got {len(operator_roles)}")
        cr = operator_roles[0] if operator_roles else {}
        check(bool(views) == values["rbac"]["aggregateToDefaultRoles"], "aggregated view ClusterRole presence differs from rbac.aggregateToDefaultRoles")
        for view in views:
            labels = view["metadata"]["labels"]
            for role in ("view", "edit", "admin"):
                check(labels.get(f"rbac.authorization.k8s.io/aggregate-to-{role}") == "true", f"{view_name}: not aggregated to {role}")
            check(rules_of(view) == {("imagebloat.dev", "imagereports", ()): {"get", "list", "watch"}},
                  f"{view_name}: namespace users get read access to ImageReports and nothing else, got {rules_of(view)}")
        expected = {(g, r, ()): set(v) for (g, r), v in EXPECTED_RULES.items()}
        if values["rbac"]["secrets"] == "cluster":
            expected[("", "secrets", ())] = {"get"}
        for extra in values["rbac"]["extraWorkloadRules"]:
            for g in extra["apiGroups"]:
                for r in extra["resources"]:
                    expected.setdefault((g, r, ()), set()).add("get")
        got = rules_of(cr)
        check(got == expected, "ClusterRole rules differ from the expected least-privilege set:\n"
              + "".join(f"    {k}: got {sorted(got.get(k, []))}, expected {sorted(expected.get(k, []))}\n"
                        for k in sorted(set(got) | set(expected)) if got.get(k) != expected.get(k)))
        for role in by_kind.get("ClusterRole", []) + by_kind.get("Role", []):
            for rule in role.get("rules", []):
                check("*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", []),
                      f"{role['kind']}/{role['metadata']['name']}: wildcard rule {rule}")
        roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind.get("Role", [])}
        secret_roles = {k: r for k, r in roles.items() if any("secrets" in rule.get("resources", []) for rule in r.get("rules", []))}
        if values["rbac"]["secrets"] == "namespaces":
            wanted = values["rbac"]["secretNamespaces"] or op["namespaces"]
            check(sorted(k[0] for k in secret_roles) == sorted(set(wanted)), f"pull-secret Roles in {sorted(k[0] for k in secret_roles)}, expected {sorted(set(wanted))}")
            for r in secret_roles.values():
                check(rules_of(r) == {("", "secrets", ()): {"get"}}, f"Role {r['metadata']['name']}: more than get on secrets")
        else:
            check(not secret_roles, "pull-secret Roles although rbac.secrets is not namespaces")
        lease_roles = [r for r in roles.values() if any("leases" in rule.get("resources", []) for rule in r.get("rules", []))]
        if leader:
            check(len(lease_roles) == 1, "expected one Lease Role")
            for r in lease_roles:
                check(r["metadata"]["namespace"] == ns, "Lease Role is not in the release namespace")
                check(rules_of(r) == {("coordination.k8s.io", "leases", ()): {"create"},
                                      ("coordination.k8s.io", "leases", (lease_name,)): {"get", "update"}},
                      f"Lease Role rules: {rules_of(r)}")
        else:
            check(not lease_roles, "Lease Role without leader election")
        bound_roles = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in by_kind.get("RoleBinding", [])}
        check(bound_roles == set(roles), "every Role needs exactly one RoleBinding")

    # --- Service, ServiceMonitor, NetworkPolicy -------------------------------------------------
    svc = one("Service")
    check(svc["spec"]["selector"].items() <= pod_labels.items(), "Service selector does not select the operator Pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    check(svc_ports.get("metrics", {}).get("targetPort") in ("metrics", port), "Service port 'metrics' does not target the metrics port")
    check(svc_ports.get("metrics", {}).get("port") == values["service"]["port"], "Service port differs from service.port")
    sms = by_kind.get("ServiceMonitor", [])
    check(bool(sms) == values["serviceMonitor"]["enabled"], "ServiceMonitor presence differs from serviceMonitor.enabled")
    for sm in sms:
        check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "ServiceMonitor does not select the Service")
        check(ns in sm["spec"]["namespaceSelector"]["matchNames"], "ServiceMonitor does not look in the release namespace")
        for ep in sm["spec"]["endpoints"]:
            check(ep["port"] in svc_ports and ep.get("path") == "/metrics", "ServiceMonitor endpoint is not the Service's metrics port")
            check(ep.get("honorLabels") is True, "ServiceMonitor must honor the image series' namespace/container labels")
        check(values["serviceMonitor"]["labels"].items() <= sm["metadata"]["labels"].items(), "ServiceMonitor lacks serviceMonitor.labels")
    nps = by_kind.get("NetworkPolicy", [])
    check(bool(nps) == values["networkPolicy"]["enabled"], "NetworkPolicy presence differs from networkPolicy.enabled")
    for np_ in nps:
        check(np_["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items(), "NetworkPolicy does not select the operator Pods")
        ingress_ports = [p["port"] for rule in np_["spec"]["ingress"] for p in rule["ports"]]
        check(ingress_ports == ["metrics"], f"NetworkPolicy ingress ports {ingress_ports}: only the metrics port")
        egress_ports = {(p["port"], p["protocol"]) for rule in np_["spec"]["egress"] for p in rule["ports"]}
        npv = values["networkPolicy"]
        want = {(443, "TCP")} | {(p, "TCP") for p in npv["apiServer"]["ports"] + npv["registries"]["extraPorts"]}
        if npv["dns"]["enabled"]:
            want |= {(53, "UDP"), (53, "TCP")}
        check(egress_ports == want, f"NetworkPolicy egress ports {sorted(egress_ports)}, expected {sorted(want)}")

    # --- Dashboard ------------------------------------------------------------------------------
    cms = [c for c in by_kind.get("ConfigMap", []) if "imagebloat.json" in c.get("data", {})]
    check(bool(cms) == values["dashboard"]["enabled"], "dashboard ConfigMap presence differs from dashboard.enabled")
    for cm in cms:
        d = values["dashboard"]
        check(cm["metadata"]["labels"].get(d["label"]) == str(d["labelValue"]), f"dashboard ConfigMap lacks the label {d['label']}={d['labelValue']}")
        check(cm["metadata"]["namespace"] == (d["namespace"] or ns), "dashboard ConfigMap namespace")
        check(json.loads(cm["data"]["imagebloat.json"]) == json.loads((CHART / "dashboards" / "imagebloat.json").read_text()),
              "dashboard ConfigMap JSON differs from dashboards/imagebloat.json")

    # --- PrometheusRule -------------------------------------------------------------------------
    prs = by_kind.get("PrometheusRule", [])
    pr_values = values["prometheusRule"]
    check(bool(prs) == pr_values["enabled"], "PrometheusRule presence differs from prometheusRule.enabled")
    for pr in prs:
        alerts = {r["alert"]: r for g in pr["spec"]["groups"] for r in g["rules"] if "alert" in r}
        want = {name for key, name in ALERTS.items() if pr_values["alerts"][key]["enabled"]}
        check(set(alerts) == want, f"alerts {sorted(alerts)}, expected {sorted(want)}")
        for key, name in ALERTS.items():
            if name not in alerts:
                continue
            rule, cfg = alerts[name], pr_values["alerts"][key]
            check(rule["labels"].get("severity") == cfg["severity"], f"{name}: severity")
            check(rule.get("for") == cfg["for"], f"{name}: for")
            for k, v in pr_values["additionalRuleLabels"].items():
                check(rule["labels"].get(k) == v, f"{name}: additional label {k}")
            ann = rule.get("annotations", {})
            check(ann.get("summary") and ann.get("description"), f"{name}: summary and description annotations")
            check(ann.get("runbook_url") == f"{pr_values['runbookUrl']}#{name.lower()}", f"{name}: runbook_url")
        if "ImageBloatImageGrew" in alerts:
            ratio = pr_values["alerts"]["imageGrew"]["growthRatio"]
            check(alerts["ImageBloatImageGrew"]["expr"].rstrip().endswith(f"> {ratio}"), "ImageBloatImageGrew does not use growthRatio")
        if "ImageBloatOperatorAbsent" in alerts:
            check(f"up{{{pr_values['operatorJobSelector']}}}" in alerts["ImageBloatOperatorAbsent"]["expr"], "ImageBloatOperatorAbsent does not use operatorJobSelector")

    for f in failures:
        print(f"FAIL {opts.values}: {f}")
    if not failures:
        print(f"ok   {opts.values}: {len(docs)} objects ({', '.join(sorted(by_kind))})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
