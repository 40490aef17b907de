"""``podplay services``: the Services podplay serves, as ``kubectl get svc`` shows them."""

from __future__ import annotations

import json


def register(sub, common) -> None:
    p = sub.add_parser("services", aliases=["svc"], parents=[common], help="list Services",
                       description="One line per Service podplay serves: TYPE, CLUSTER-IP (None: headless), "
                       "EXTERNAL-IP (a LoadBalancer answers on the host's addresses; an ExternalName's name), "
                       "PORT(S) (port:nodePort/protocol), ENDPOINTS (ready pods / pods the selector matches) and "
                       "the manifest it came from. A Service whose rules are missing or out of date shows "
                       "'(stale: run podplay up)'.")
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument("--namespace", "-n", default="", help="only this namespace")
    p.set_defaults(func=cmd_services)


def cmd_services(args, ctx) -> int:
    from reconciler.host import open_drivers
    from reconciler.reconcile import services_status
    from reconciler.state import StateStore

    drivers = open_drivers(ctx.paths)
    state = StateStore(ctx.paths.state_db)
    try:
        rows = services_status(drivers, state)
    finally:
        state.close()
        drivers.close()
    if args.namespace:
        rows = [r for r in rows if r["namespace"] == args.namespace]
    if args.output == "json":
        json.dump(rows, ctx.out, indent=2)
        print(file=ctx.out)
        return 0
    print(services_table(rows), file=ctx.out)
    return 0


def services_table(rows: list[dict]) -> str:
    from reconciler.cli.table import render_table

    head = ("NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "ENDPOINTS", "SOURCE")
    lines = []
    for r in rows:
        external = ",".join(r["externalIPs"]) or ("<pending>" if r["type"] == "LoadBalancer" else "<none>")
        stale = "" if r["serving"] else " (stale: run podplay up)"
        lines.append((r["namespace"], r["name"], r["type"], r["clusterIP"] or "<none>", external,
                      ",".join(p["text"] for p in r["ports"]) or "<none>", f"{r['ready']}/{r['total']}{stale}",
                      r["source"]))
    return render_table(head, lines)
