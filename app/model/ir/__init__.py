"""The model compiled when the image is built: OpenVINO IR and a manifest in SERVING_MODEL_DIR.

`build` (torch, at build time) writes it; `package` (no torch) opens it at start-up and checks
it against the settings; `manifest` is the record between the two.
"""
