"""Locust users that score through the infergate router with an endpoint key.

Each user reads the model's metadata through the router (GET /v2/models/{model}), builds a
real input from it (names, datatypes, shapes; dynamic dims become 1), then alternates
between AzureML's /score and the Open Inference Protocol's v2 infer. Every response is
checked: a non-2xx status or a body without outputs is a failure.

Settings (environment):
    INFERGATE_KEY       endpoint key (Authorization: Bearer ...); `make up` prints it
    INFERGATE_ENDPOINT  endpoint name (default: demo, as `make up` creates)
    INFERGATE_MODEL     model name (default: demo)

Headless, against `make up`:
    INFERGATE_KEY=<key> locust -f benchmarks/locustfile.py --headless -u 5 -r 5 -t 5s --host http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from locust import HttpUser, constant, task

# locust puts this file's folder on sys.path, not the checkout's root; the body builder is
# a plain module so the tests can import it without locust (which monkey-patches on import).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.example_inputs import bodies_from_metadata  # noqa: E402

KEY = os.environ.get("INFERGATE_KEY", "")
ENDPOINT = os.environ.get("INFERGATE_ENDPOINT", "demo")
MODEL = os.environ.get("INFERGATE_MODEL", "demo")


class ScoringUser(HttpUser):
    """Scores through the router as an AzureML client would, with the endpoint key."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.base = f"/api/v1/service/{ENDPOINT}"
        self.auth = {"Authorization": f"Bearer {KEY}"} if KEY else {}
        with self.client.get(f"{self.base}/v2/models/{MODEL}", headers=self.auth, name="metadata",
                             catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"metadata: HTTP {resp.status_code}: {resp.text[:200]}")
                self.v2_body = self.score_body = None
                return
            self.v2_body, self.score_body = bodies_from_metadata(resp.json())

    @task
    def v2_infer(self) -> None:
        if self.v2_body is None:
            return
        with self.client.post(f"{self.base}/v2/models/{MODEL}/infer", json=self.v2_body, headers=self.auth,
                              name="v2 infer", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif not resp.json().get("outputs"):
                resp.failure(f"no outputs in {resp.text[:200]}")

    @task
    def score(self) -> None:
        if self.score_body is None:
            return
        with self.client.post(f"{self.base}/score", json=self.score_body, headers=self.auth,
                              name="score", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
            elif resp.json() in (None, [], {}):
                resp.failure(f"empty result: {resp.text[:200]}")
