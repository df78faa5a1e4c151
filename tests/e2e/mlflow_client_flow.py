"""MLflow Python client flow for the end-to-end suite (tests/e2e_mlflow.rs).

The tracking URI and credentials come from the environment (MLFLOW_TRACKING_URI plus
MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_CLIENT_CERT_PATH/SERVER_CERT_PATH), exactly as
a user would set them. Prints one JSON line for the Rust side to assert on.

  full <label>        create an experiment and a run, log a param, metrics and an
                      artifact, then read all of it back
  readonly <run_id>   read the run, then try three writes (expected: each refused); each
                      refusal as the client reports it (error_code, message, str)
  nokey               one read with no credential at all (expected: refused)
"""

import json
import os
import sys
import tempfile

import mlflow.utils.rest_utils as rest_utils
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

# The client raises one exception type for any non-200 reply and drops the status code;
# record (endpoint, status) of every REST reply so the refusal can be checked precisely.
_replies = []
_verify = rest_utils.verify_rest_response


def _recording_verify(response, endpoint, *args, **kwargs):
    _replies.append((endpoint, response.status_code))
    return _verify(response, endpoint, *args, **kwargs)


rest_utils.verify_rest_response = _recording_verify

ARTIFACT_TEXT = "written through Envoy by the e2e suite\n"


def full(label):
    client = MlflowClient()
    exp_id = client.create_experiment(f"e2e-{label}-{os.getpid()}")
    run_id = client.create_run(exp_id).info.run_id
    client.log_param(run_id, "alpha", "0.5")
    for step, loss in enumerate([0.9, 0.6, 0.3]):
        client.log_metric(run_id, "loss", loss, step=step)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "notes.txt")
        with open(src, "w") as f:
            f.write(ARTIFACT_TEXT)
        client.log_artifact(run_id, src)
        client.set_terminated(run_id)

        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "loss")
        listed = [a.path for a in client.list_artifacts(run_id)]
        dst = os.path.join(tmp, "back")
        os.mkdir(dst)
        with open(client.download_artifacts(run_id, "notes.txt", dst)) as f:
            downloaded = f.read()
    return {
        "experiment_id": exp_id,
        "experiment_name": client.get_experiment(exp_id).name,
        "run_id": run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "artifact_uri": run.info.artifact_uri,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "history": [[m.step, m.value] for m in sorted(history, key=lambda m: m.step)],
        "artifacts": listed,
        "artifact_roundtrip": downloaded == ARTIFACT_TEXT,
    }


def _refusal(e):
    """What the client made of a refusal: MLflow's error code and message, as users see them."""
    return {
        "error_code": e.error_code,
        "message": e.message,
        "str": str(e),
        "json": getattr(e, "json", None),
    }


def readonly(run_id):
    client = MlflowClient()
    read_ok = client.get_run(run_id).info.run_id == run_id
    writes = {
        "log_metric": lambda: client.log_metric(run_id, "loss", 0.1, step=99),
        "create_experiment": lambda: client.create_experiment(f"e2e-ro-{os.getpid()}"),
        "set_tag": lambda: client.set_tag(run_id, "who", "read-only"),
    }
    errors, endpoints = {}, {}
    for name, write in writes.items():
        try:
            write()
            errors[name] = None
        except MlflowException as e:
            errors[name] = _refusal(e)
        endpoints[name] = _replies[-1]
    endpoint, status = endpoints["log_metric"]
    return {
        "read_ok": read_ok,
        "write_endpoint": endpoint,
        "write_status": status,
        "write_error": errors["log_metric"]["json"] if errors["log_metric"] else None,
        "write_errors": errors,
        "write_replies": endpoints,
    }


def nokey():
    try:
        MlflowClient().search_experiments(max_results=1)
        return {"error": None}
    except MlflowException as e:
        return {"error": _refusal(e), "reply": _replies[-1]}


def main(argv):
    if len(argv) == 2 and argv[0] == "full":
        result = full(argv[1])
    elif len(argv) == 2 and argv[0] == "readonly":
        result = readonly(argv[1])
    elif argv == ["nokey"]:
        result = nokey()
    else:
        sys.exit(__doc__)
    result["replies"] = _replies
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
