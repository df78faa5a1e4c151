"""Facts about every field of the installed MLflow's GraphQL schema (the one `/graphql`
serves), for tests/scope_routes.rs to judge: the filter lets read-only users POST to
`/graphql`, which is only right while no field can write.

For each field of each object type (Query and Mutation, and the types they return) it
reports how the field is resolved:
  - "default": graphene's attribute reader, which only reads the parent object;
  - "custom": a resolver function, with what its source calls: MLflow handlers
    (`mlflow.server.handlers.<name>`), the protobuf request messages it builds (each with
    the REST endpoints MLflow's proto declares for it), and any other call;
  - anything else as "unknown".
Prints one JSON object; exits non-zero when the schema yields no field, so a change in how
the schema is read fails loudly instead of passing with an empty list.
"""

import ast
import inspect
import json
import os
import sys
import textwrap
import warnings

os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
warnings.filterwarnings("ignore")

import graphql  # noqa: E402
import mlflow  # noqa: E402
from graphene.types.resolver import dict_or_attr_resolver  # noqa: E402
from mlflow.protos import databricks_pb2, model_registry_pb2, service_pb2  # noqa: E402
from mlflow.server.graphql.graphql_schema_extensions import schema  # noqa: E402

PROTO_MODULES = {"service_pb2": service_pb2, "model_registry_pb2": model_registry_pb2}


def dotted(node):
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def rest_endpoints(message):
    """(method, path) for every REST route MLflow's proto declares for this request type."""
    out = []
    for module in PROTO_MODULES.values():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if method.input_type.full_name != message.DESCRIPTOR.full_name:
                    continue
                for e in method.GetOptions().Extensions[databricks_pb2.rpc].endpoints:
                    # One of MLflow's protos writes its path without the leading slash.
                    path = e.path if e.path.startswith("/") else "/" + e.path
                    out.append([e.method, f"{e.since.major}.0{path}"])
    return out


def describe(resolver):
    if resolver is None:
        return {"kind": "default"}
    func = getattr(resolver, "func", None)
    if func is dict_or_attr_resolver:
        return {"kind": "default"}
    if not inspect.isfunction(resolver):
        return {"kind": "unknown", "what": repr(resolver)}
    tree = ast.parse(textwrap.dedent(inspect.getsource(resolver)))
    handler_calls, messages, other_calls = [], [], []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func) or "<computed>"
        parts = name.split(".")
        if name.startswith("mlflow.server.handlers."):
            handler_calls.append(parts[-1])
        elif len(parts) >= 2 and parts[-2] in PROTO_MODULES:
            message = getattr(PROTO_MODULES[parts[-2]], parts[-1])
            messages.append(
                {"name": message.DESCRIPTOR.name, "endpoints": rest_endpoints(message)}
            )
        else:
            other_calls.append(name)
    return {
        "kind": "custom",
        "resolver": f"{resolver.__module__}.{resolver.__qualname__}",
        "handler_calls": handler_calls,
        "messages": messages,
        "other_calls": sorted(set(other_calls)),
    }


def main():
    s = schema.graphql_schema
    fields = []
    for type_name, t in sorted(s.type_map.items()):
        if type_name.startswith("__") or not isinstance(t, graphql.GraphQLObjectType):
            continue
        for field_name, field in t.fields.items():
            fields.append({"type": type_name, "field": field_name, **describe(field.resolve)})
    roots = {
        "query": s.query_type and s.query_type.name,
        "mutation": s.mutation_type and s.mutation_type.name,
        "subscription": s.subscription_type and s.subscription_type.name,
    }
    if not fields or not roots["query"]:
        sys.exit("no GraphQL fields read: has MLflow or graphene changed?")
    print(json.dumps({"mlflow_version": mlflow.__version__, "roots": roots, "fields": fields}))


if __name__ == "__main__":
    main()
