"""Check a POST /predict response: real weights, and an expected ImageNet class in the top k.

    curl -s -F file=@grace_hopper.jpg http://localhost:8000/predict > response.json
    python3 .github/scripts/check_prediction.py response.json --expect "military uniform"

Exit status 0 when every check holds, 1 with the reason otherwise. Standard library only: it
runs on a bare CI runner.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def check(
    response: dict[str, Any],
    *,
    expect: list[str],
    top: int,
    count: int | None,
    allow_random: bool,
) -> list[str]:
    """The failed checks, as sentences; empty when the response passes."""
    problems: list[str] = []
    predictions = response.get("predictions")
    if not isinstance(predictions, list) or not predictions:
        return [f"no predictions in the response: {json.dumps(response)[:500]}"]
    labels = [str(p.get("label")) for p in predictions if isinstance(p, dict)]
    weights = str(response.get("weights", ""))
    if not allow_random and (not weights or weights == "random"):
        problems.append(f"the server runs with weights {weights!r}, not real pretrained weights")
    if count is not None and len(predictions) != count:
        problems.append(f"{len(predictions)} predictions, expected {count}")
    for label in expect:
        if label not in labels[:top]:
            problems.append(f"{label!r} is not in the top {top}: {labels[:top]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("response", help="file with the JSON response, or - for stdin")
    parser.add_argument("--expect", action="append", default=[], help="label in the top k")
    parser.add_argument("--top", type=int, default=5, help="k (default 5)")
    parser.add_argument("--count", type=int, help="exact number of predictions expected")
    parser.add_argument("--allow-random", action="store_true", help="accept random weights")
    args = parser.parse_args(argv)

    text = sys.stdin.read() if args.response == "-" else Path(args.response).read_text()
    try:
        response = json.loads(text)
    except json.JSONDecodeError:
        print(f"check_prediction: not JSON: {text[:500]!r}", file=sys.stderr)
        return 1
    if not isinstance(response, dict):
        print(f"check_prediction: not a JSON object: {text[:500]!r}", file=sys.stderr)
        return 1
    for p in response.get("predictions") or []:
        print(f"  {p.get('score', 0):.3f}  {p.get('label')}")
    problems = check(
        response,
        expect=args.expect,
        top=args.top,
        count=args.count,
        allow_random=args.allow_random,
    )
    for problem in problems:
        print(f"check_prediction: FAIL: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_prediction: ok ({response.get('model')}, {response.get('weights')})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
