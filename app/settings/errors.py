"""One start-up line for invalid settings: it names each bad variable and the rule it broke.

Secret settings never have their value in that line. What is secret is decided by the field's
type, not by a list of names: any field whose annotation holds a pydantic `SecretStr`,
`SecretBytes` or `Secret[...]` (also inside `list[...]`, `Optional[...]`, `Annotated[...]`) is
secret, so a secret added later is covered without touching this module. For those fields the
input is never shown, and any fragment of it that a message might quote is masked as well.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic.types import Secret

_SECRET_TYPES: tuple[type, ...] = (SecretStr, SecretBytes, Secret)
_MASK = "***"
# Fragments shorter than this are not masked in messages (they would mangle ordinary words);
# the input itself is never shown for a secret field, whatever its length.
_MIN_MASKED = 3


def is_secret_annotation(annotation: Any) -> bool:
    """True when the type, or any type nested in it, is a pydantic secret type."""
    if isinstance(annotation, type) and issubclass(annotation, _SECRET_TYPES):
        return True
    origin = getattr(annotation, "__origin__", None)
    if isinstance(origin, type) and issubclass(origin, _SECRET_TYPES):
        return True  # Secret[int] and other parametrised secrets
    return any(is_secret_annotation(arg) for arg in get_args(annotation))


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names of the model's fields that hold secrets."""
    return frozenset(
        name for name, field in model.model_fields.items() if is_secret_annotation(field.annotation)
    )


def _fragments(value: object) -> set[str]:
    """The text of an input and of its items (comma-separated, or a list's)."""
    if isinstance(value, SecretStr | SecretBytes | Secret):
        return set()  # already masked by pydantic; never unwrapped here
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        parts = {value, value.strip(), *(part.strip() for part in value.split(","))}
        return {p for p in parts if len(p) >= _MIN_MASKED}
    if isinstance(value, list | tuple | set | frozenset):
        found: set[str] = set()
        for item in value:
            found |= _fragments(item)
        return found
    return {str(value)} if len(str(value)) >= _MIN_MASKED else set()


def _masked(message: str, value: object) -> str:
    for fragment in sorted(_fragments(value), key=len, reverse=True):
        message = message.replace(fragment, _MASK)
    return message


def describe_validation_error(error: ValidationError, model: type[BaseModel], prefix: str) -> str:
    """`invalid configuration: VAR=value: rule; ...` on one line; secrets as `VAR: rule`."""
    secrets = secret_fields(model)
    parts = []
    for item in error.errors():
        message = str(item["msg"]).removeprefix("Value error, ")
        if not item["loc"]:  # a rule across fields: its message names them
            parts.append(message)
            continue
        field = str(item["loc"][0])
        env = f"{prefix}{field.upper()}"
        rest = item["loc"][1:]
        where = "".join(f" (item {p + 1})" if isinstance(p, int) else f".{p}" for p in rest)
        given = item.get("input")
        if field in secrets:
            parts.append(f"{env}{where}: {_masked(message, given)} (value not shown: secret)")
            continue
        shown = f"={given!r}" if isinstance(given, str | int | float | bool) else ""
        parts.append(f"{env}{where}{shown}: {message}")
    return "invalid configuration: " + "; ".join(parts)
