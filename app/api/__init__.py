"""HTTP transport: routes, request parsing, error mapping, OpenAPI. Knows nothing of torch."""
