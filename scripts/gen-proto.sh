#!/usr/bin/env bash
# Generates the Python modules of the Open Inference Protocol's gRPC definition
# (app/oip/grpc/grpc_predict_v2.proto -> grpc_predict_v2_pb2.py and its .pyi), which are committed
# so the image and the app need no compiler. The service stub module (_pb2_grpc.py) is not
# generated: app/oip/grpc/server.py registers its handlers with grpc's generic API and the tests
# use tritonclient's own stubs.
#
#   scripts/gen-proto.sh           rewrite the generated files in place
#   scripts/gen-proto.sh --check   exit 1 if the committed files differ from a fresh generation
#
# One edit follows protoc: the messages go into a descriptor pool of their own instead of
# protobuf's default pool. tritonclient and kserve register the same `inference.*` names in the
# default pool, and a second registration of a name fails, so without this the server could not
# share a process with either client (the tests run tritonclient against it in one process).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
# grpcio-tools decides the generated code (and its minimum grpcio); pinned in pyproject.toml.
WANT_TOOLS="1.81.1"

mode="write"
case "${1:-}" in
  "") ;;
  --check) mode="check" ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

have_tools="$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))')"
if [[ "$have_tools" != "$WANT_TOOLS" ]]; then
  echo "grpcio-tools $have_tools is installed; this script generates with $WANT_TOOLS" >&2
  exit 1
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

(cd app/oip/grpc && "$OLDPWD/$PYTHON" -m grpc_tools.protoc -I. \
  --python_out="$out" --pyi_out="$out" grpc_predict_v2.proto)

sed -i 's/^DESCRIPTOR = _descriptor_pool\.Default()\.AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
  "$out/grpc_predict_v2_pb2.py"
# The edit must have happened: a protoc that writes different lines fails here, not later.
grep -q '^DESCRIPTOR = POOL\.AddSerializedFile(' "$out/grpc_predict_v2_pb2.py"

status=0
for name in grpc_predict_v2_pb2.py grpc_predict_v2_pb2.pyi; do
  if [[ "$mode" == "check" ]]; then
    if ! cmp -s "$out/$name" "app/oip/grpc/$name"; then
      echo "app/oip/grpc/$name is not what scripts/gen-proto.sh generates; run it and commit" >&2
      status=1
    fi
  else
    cp "$out/$name" "app/oip/grpc/$name"
  fi
done
exit "$status"
