"""Auditors and the curious public: download the signed bundle and the registrant list.

Rare but heavy: the list streams every committed registrant, so a handful of auditors can cost
more server time than thousands of result checks. They check what they download the cheap way
(row count against the committed tree size); the full re-derivation is `stimulus-verify`'s job.
"""

from __future__ import annotations

import json

from locust import FastHttpUser, between, task
from plan_feed import section

COMMITMENT = "/v1/campaigns/{id}/commitment"
BUNDLE = "/v1/campaigns/{id}/bundle"
REGISTRANTS = "/v1/campaigns/{id}/registrants?format=csv"


class Auditor(FastHttpUser):
    weight = 1
    wait_time = between(20.0, 60.0)
    # A large list takes a while to stream; the default 60 s would cut a slow server short.
    network_timeout = 120.0

    def on_start(self) -> None:
        spec = section("audit")
        self.campaign_id = spec["campaign_id"]
        self.tree_size = int(spec["tree_size"])

    @task
    def download(self) -> None:
        cid = self.campaign_id
        self.client.get(f"/v1/campaigns/{cid}/commitment", name=COMMITMENT)
        with self.client.get(f"/v1/campaigns/{cid}/bundle", name=BUNDLE, catch_response=True) as response:
            try:
                signed = json.loads(response.content or b"{}")
            except ValueError:
                signed = {}
            if response.status_code == 200 and "bundle" not in signed:
                response.failure("the bundle is not a signed bundle document")
        with self.client.get(f"/v1/campaigns/{cid}/registrants?format=csv", name=REGISTRANTS,
                             catch_response=True) as response:
            rows = (response.content or b"").count(b"\n") - 1
            if response.status_code == 200 and rows != self.tree_size:
                response.failure(f"{rows} registrants listed, {self.tree_size} committed")
