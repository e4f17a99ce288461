#!/usr/bin/env python3
"""Prints every PromQL expression of a Grafana dashboard, one per line, ready to evaluate.

    scripts/dashboard-queries.py [DASHBOARD.json] [--with-titles]

DASHBOARD.json defaults to charts/imagebloat/dashboards/imagebloat.json. Every panel target's
`expr` is printed (panels nested in rows included), in panel order, with Grafana's variables
replaced so that Prometheus can evaluate the expression as it is:

  - the dashboard's own variables ($name, ${name}, ${name:format}, [[name]]): a variable that can
    select "All" or several values becomes its allValue (`.*` when it has none), so that
    `label=~"$namespace"` matches every value; any other variable becomes its current (default)
    value, e.g. `$top` -> `10`;
  - Grafana's built-ins: $__rate_interval -> 5m, $__interval -> 1m, $__range -> 1h,
    $__range_s -> 3600, $__range_ms -> 3600000, $__interval_ms -> 60000.

Newlines inside an expression become spaces, so each expression is exactly one line.
--with-titles prefixes each line with "<panel title>\t<refId>\t".

Exit status 1 when the dashboard has no expression or an expression names a variable that the
dashboard does not define (a typo would otherwise reach Prometheus as a literal "$name").
"""

import json
import re
import signal
import sys
from pathlib import Path

BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

# $name, ${name}, ${name:format}, [[name]], [[name:format]]
VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]|\$(?P<plain>\w+)"
)


def variable_values(dashboard):
    """Name -> the text that replaces the variable."""
    values = dict(BUILTINS)
    for var in dashboard.get("templating", {}).get("list", []):
        name = var.get("name")
        if not name or var.get("type") == "datasource":
            continue
        if var.get("includeAll") or var.get("multi"):
            values[name] = var.get("allValue") or ".*"
            continue
        current = var.get("current") or {}
        value = current.get("value")
        if isinstance(value, list):
            value = value[0] if value else None
        if value in (None, "", "$__all"):
            options = var.get("options") or []
            value = options[0].get("value") if options else var.get("query", "")
            if isinstance(value, str) and var.get("type") == "custom":
                value = value.split(",")[0].strip()
        values[name] = str(value)
    return values


def panels_of(panels):
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    with_titles = "--with-titles" in argv
    unknown_flags = [a for a in argv if a.startswith("--") and a != "--with-titles"]
    if unknown_flags or len(args) > 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    default = Path(__file__).resolve().parent.parent / "charts/imagebloat/dashboards/imagebloat.json"
    path = Path(args[0]) if args else default
    dashboard = json.loads(path.read_text())
    values = variable_values(dashboard)
    datasource_vars = {
        v["name"]
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "datasource"
    }

    failed = False
    count = 0
    for panel in panels_of(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr:
                continue

            def substitute(m):
                nonlocal failed
                name = m.group("braced") or m.group("bracketed") or m.group("plain")
                if name in values:
                    return values[name]
                if name in datasource_vars:
                    return m.group(0)
                print(
                    f"{path}: panel {panel.get('title')!r} ({target.get('refId')}): "
                    f"unknown variable ${name}",
                    file=sys.stderr,
                )
                failed = True
                return m.group(0)

            line = " ".join(VARIABLE.sub(substitute, expr).split())
            if with_titles:
                line = f"{panel.get('title', '')}\t{target.get('refId', '')}\t{line}"
            print(line)
            count += 1
    if count == 0:
        print(f"{path}: no panel expression found", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    sys.exit(main(sys.argv[1:]))
