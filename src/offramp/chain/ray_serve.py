"""A chain's stages as Ray Serve deployments, each with its own number of replicas.

``offramp serve PIPELINE --engine ray [--address A]`` (or ``Chain.from_pipeline(path, engine="ray")``)
keeps the chain's logic — conditions, full labels, actions, validation, the HTTP service — in this
process and moves each classify stage's model into a Ray Serve deployment with ``replicas:`` of its
own (a heavy stage gets more than a light one); Ray spreads the replicas over the cluster's nodes.
A stage's model directory travels as its files' bytes through Ray's object store; each replica
writes them to a private directory, checks them against the manifest's hashes and loads the model
(no pickled model anywhere). The answers are the ones the in-process chain gives: the same model
files answer, only elsewhere. Remote stages (``remote:``) stay what they are.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Sequence, cast

import numpy as np

from offramp.errors import UsageError
from offramp.estimators.base import TextClassifier
from offramp.modeldir.store import model_version
from offramp.scale.ray_engine import Predictor, connect, pack_model_dir

CALL_TIMEOUT_S = 60.0


class StageReplica(Predictor):
    """One replica of a stage: the model unpacked on its node and verified, answering batches."""

    def __call__(self, texts: list[str]) -> tuple[list[str], list[list[float]], str, int]:
        import os

        labels, proba = self.model.predict_and_proba(texts)
        return [str(x) for x in labels], proba.tolist(), str(self.node), os.getpid()


class RayStage:
    """The part of a model's interface a stage calls, answered by the stage's Ray Serve deployment;
    it counts the messages each replica (node, process) answered."""

    multi_label = False

    def __init__(self, handle: Any, local: TextClassifier, name: str) -> None:
        self.handle, self.name = handle, name
        self.classes_ = local.classes_
        self.reject_label_ = local.reject_label_
        self.counts: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def predict_and_proba(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        labels, proba, node, pid = self.handle.remote(list(texts)).result(timeout_s=CALL_TIMEOUT_S)
        with self._lock:
            self.counts[(node, pid)] += len(texts)
        return np.array(labels, dtype=object), np.asarray(proba, dtype=np.float64)

    def predict_one(self, text: str) -> tuple[str, float, np.ndarray]:
        labels, proba = self.predict_and_proba([text])
        return str(labels[0]), float(proba[0].max()), proba[0]


def deploy(
    stages: Sequence[tuple[str, Path, int, TextClassifier]], address: str | None = None
) -> tuple[list[str], dict[str, RayStage], bool]:
    """Start a Ray Serve deployment for each (stage name, model directory, replicas, the model as
    loaded here); returns the Serve applications started, each stage's stand-in model (which asks
    its deployment) and whether this call connected to Ray (:func:`undeploy` undoes both)."""
    started = connect(address, None)
    import ray
    from ray import serve

    serve.start(proxy_location="Disabled")  # the chain's own service answers HTTP; Serve only hosts the models
    replica = cast(Any, serve.deployment)(StageReplica)
    run_id = uuid.uuid4().hex[:8]
    apps: list[str] = []
    models: dict[str, RayStage] = {}
    for stage, model_dir, replicas, local in stages:
        app = replica.options(name=f"stage-{stage}", num_replicas=replicas, ray_actor_options={"num_cpus": 0.01}).bind(
            [ray.put(pack_model_dir(model_dir))], model_version(model_dir)
        )
        name = f"offramp-{run_id}-{stage}"
        try:
            handle = serve.run(app, name=name, route_prefix=None)
        except Exception as e:  # a replica that cannot start (a broken model directory, no resources)
            undeploy(apps, started)
            raise UsageError(
                f"stage {stage}: its Ray Serve deployment did not start ({type(e).__name__})",
                "check 'ray status' and the model directory",
            ) from None
        apps.append(name)
        models[stage] = RayStage(handle, local, stage)
    return apps, models, started


def undeploy(apps: list[str], disconnect: bool) -> None:
    """Delete the Serve applications; ``disconnect``: leave Ray too (this process joined it for
    them), so the process does not outlive a cluster that stops later."""
    import ray
    from ray import serve

    asked = []
    for name in apps:  # asked all at once, then waited for together (one at a time takes ~3 s each)
        try:
            serve.delete(name, _blocking=False)
            asked.append(name)
        except Exception:  # already gone with the cluster
            pass
    deadline = time.monotonic() + 30
    while asked and time.monotonic() < deadline:
        try:
            if not set(asked) & set(serve.status().applications):
                break
        except Exception:  # the cluster went away: nothing left to wait for
            break
        time.sleep(0.2)
    if disconnect and ray.is_initialized():
        ray.shutdown()
