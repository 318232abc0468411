"""The shadow comparison (SERVING_SHADOW_*): a sample of the images this process answered on
/predict is sent, in the background, to the other version of an A/B test (its HTTP port), and
the two top-1 classes are compared, so the dashboards show how often stable and canary
disagree. The client's answer is never delayed or changed by it.

- `policy`: SERVING_SHADOW_URL's grammar, the sampling, the no-loop rule (`X-Shadow`);
- `client`: one `/predict` of the other version over a reused connection pool;
- `comparison`: `Shadow`, which takes the copies (bounded in flight), compares and counts.

It knows nothing of FastAPI: the /predict route hands it the bytes it answered for.
"""
