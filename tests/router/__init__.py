"""Router tests (a package so that mypy tells its conftest from the top-level one)."""
