"""Interactive load test with Locust (not a project dependency: `pip install locust`).

    locust -f bench/locustfile.py --host http://localhost:8000
    # then open http://localhost:8089, or headless:
    locust -f bench/locustfile.py --host http://localhost:8000 --headless -u 10 -r 2 -t 1m

Each simulated user uploads a photograph (multipart, raw bytes or a batch), and now and then
checks /ready. Set IMAGE=/path/to/photo.jpg to send your own picture.
"""

from __future__ import annotations

import os
from pathlib import Path

from locust import HttpUser, between, task

from bench.lib.images import small_jpeg

IMAGE = Path(os.environ["IMAGE"]).read_bytes() if os.environ.get("IMAGE") else small_jpeg()


class ClassifierUser(HttpUser):
    wait_time = between(0.0, 0.5)

    @task(6)
    def predict_upload(self) -> None:
        self.client.post("/predict", files={"file": ("photo.jpg", IMAGE, "image/jpeg")})

    @task(3)
    def predict_raw(self) -> None:
        self.client.post("/predict", data=IMAGE, headers={"Content-Type": "image/jpeg"})

    @task(1)
    def predict_batch(self) -> None:
        files = [("files", (f"{i}.jpg", IMAGE, "image/jpeg")) for i in range(4)]
        self.client.post("/predict/batch", files=files)

    @task(1)
    def ready(self) -> None:
        self.client.get("/ready")
