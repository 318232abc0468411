"""Reading the app's /metrics in tests: every sample by name and labels.

Every sample of the app carries the process's constant `model_version` label
(app/telemetry/metrics.py). `samples_of` checks that each one has it, with one value for the
whole page (`model_version` when given), and leaves it out of the keys, so a test names a series
by the labels that tell series apart; `versions_of` gives the values themselves."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

VERSION_LABEL = "model_version"


def scrape(client: TestClient, model_version: str | None = None) -> dict[str, float]:
    """Every sample as 'name{labels}' -> value (the model_version label checked, not shown)."""
    return samples_of(client.get("/metrics").text, model_version=model_version)


def versions_of(text: str) -> set[str | None]:
    """The model_version label of every sample of a Prometheus text page (None: a sample
    without it)."""
    return {
        sample.labels.get(VERSION_LABEL)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def samples_of(text: str, *, model_version: str | None = None) -> dict[str, float]:
    """Every sample of a Prometheus text page as 'name{k="v",...}' (labels sorted, the
    model_version label left out once checked) -> value."""
    samples: dict[str, float] = {}
    versions: set[str | None] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            versions.add(labels.pop(VERSION_LABEL, None))
            shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            samples[f"{sample.name}{{{shown}}}"] = sample.value
    if samples:
        assert None not in versions, f"a sample without {VERSION_LABEL}"
        assert len(versions) == 1, f"more than one {VERSION_LABEL}: {versions}"
        if model_version is not None:
            assert versions == {model_version}, versions
    return samples


def value(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))
