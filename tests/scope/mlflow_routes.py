"""List every (root, pattern, method) the installed MLflow server serves: under /api/ and
/ajax-api/, and (root "ui") every other route, the web UI's among them, for
tests/scope_routes.rs to compare with the filter's endpoint table.

Reads the routes of the app `mlflow server` runs (FastAPI's native routers, then the Flask
app mounted under it). Path parameters are written the table's way: `{}` for one segment,
`{*}` for a parameter that may span segments (Flask `<path:...>`, FastAPI `{...:path}`).
Prints one JSON object on stdout; exits non-zero when either router yields nothing, so a
change in how routes are read fails loudly instead of passing with an empty list.
"""

import json
import os
import re
import sys
import warnings

# No background job runner, no telemetry: only the route table is wanted.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
warnings.filterwarnings("ignore")

import mlflow  # noqa: E402
from fastapi import routing as fastapi_routing  # noqa: E402
from mlflow.server import app as flask_app  # noqa: E402
from mlflow.server.fastapi_app import create_fastapi_app  # noqa: E402

API = re.compile(r"^/(api|ajax-api)/(.+)$")


def flask_pattern(rule):
    rule = re.sub(r"<path:[^>]+>", "{*}", rule)
    return re.sub(r"<[^>]+>", "{}", rule)


def fastapi_pattern(path):
    path = re.sub(r"\{[^}:]+:path\}", "{*}", path)
    return re.sub(r"\{[^}*][^}]*\}", "{}", path)


def fastapi_routes(app):
    # FastAPI 0.165 nests included routers; older releases list routes flat.
    iterate = getattr(fastapi_routing, "iter_route_contexts", None)
    routes = iterate(app.routes) if iterate else app.routes
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            yield path, methods, f"fastapi:{route.name}"


def flask_routes(app):
    for rule in app.url_map.iter_rules():
        yield rule.rule, rule.methods, f"flask:{rule.endpoint}"


def main():
    served = {}
    counts = {}
    for kind, routes, to_pattern in (
        ("fastapi", fastapi_routes(create_fastapi_app()), fastapi_pattern),
        ("flask", flask_routes(flask_app), flask_pattern),
    ):
        counts[kind] = 0
        for path, methods, source in routes:
            m = API.match(path)
            counts[kind] += 1
            if m:
                root, pattern = m.group(1), to_pattern(m.group(2))
            else:
                # Envoy forwards these below its /mlflow/ and /api/mlflow/ prefixes.
                root, pattern = "ui", to_pattern(path[1:])
            for method in methods:
                served.setdefault((root, pattern, method), []).append(source)
    if min(counts.values()) == 0:
        sys.exit(f"no API routes read from {counts}: has MLflow or FastAPI changed?")
    print(
        json.dumps(
            {
                "mlflow_version": mlflow.__version__,
                "counts": counts,
                "routes": [
                    {"root": r, "pattern": p, "method": m, "sources": s}
                    for (r, p, m), s in sorted(served.items())
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
