"""Example request bodies built from a model's v2 metadata (used by the locustfile).

Kept apart from locustfile.py because importing locust monkey-patches the process (gevent).
"""

from __future__ import annotations

import random
from typing import Any


def example_value(datatype: str, rng: random.Random) -> Any:
    """One element of a v2 datatype, as JSON."""
    if datatype.startswith("FP"):
        return round(rng.random(), 3)
    if datatype.startswith(("INT", "UINT")):
        return rng.randint(0, 9)
    if datatype == "BOOL":
        return rng.random() < 0.5
    return "example"  # BYTES


def nested(flat: list[Any], shape: list[int]) -> Any:
    """Row-major flat list -> nested lists of ``shape``."""
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0]
    return [nested(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def bodies_from_metadata(metadata: dict[str, Any], seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(v2 infer body, /score body) for one example built from the model's metadata."""
    rng = random.Random(seed)
    tensors = []
    score: dict[str, Any] = {}
    for spec in metadata["inputs"]:
        shape = [d if d > 0 else 1 for d in spec["shape"]]
        count = 1
        for d in shape:
            count *= d
        flat = [example_value(spec["datatype"], rng) for _ in range(count)]
        tensors.append({"name": spec["name"], "shape": shape, "datatype": spec["datatype"], "data": flat})
        score[spec["name"]] = nested(flat, shape)
    if len(score) == 1:
        score = {"data": next(iter(score.values()))}
    return {"inputs": tensors}, score
