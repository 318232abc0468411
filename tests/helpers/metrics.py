"""Reading the app's /metrics in tests: every sample by name and labels."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def scrape(client: TestClient) -> dict[str, float]:
    """Every sample as 'name{labels}' -> value."""
    return samples_of(client.get("/metrics").text)


def samples_of(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text page as 'name{k="v",...}' (labels sorted) -> value."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def value(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))
