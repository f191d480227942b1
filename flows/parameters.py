"""Flow parameters that name a saved block: a missing block is an error that names it."""

from __future__ import annotations

import re
from typing import Any, TypeVar

__all__ = ["names_missing_blocks"]

F = TypeVar("F")

# Prefect's own text (prefect/blocks/core.py), the cause of its bare ParameterTypeError.
_NOT_FOUND = re.compile(r"Unable to find block document named (\S+) for block type (\S+)")


def names_missing_blocks(obj: F) -> F:
    """Put above ``@flow(...)``: a parameter ``{"$ref": {"block_document_slug": ...}}`` that
    names no saved block fails the run naming that block and how to save one, instead of
    Prefect's bare "Failed to resolve block references in parameters."."""
    original = obj.validate_parameters  # type: ignore[attr-defined]

    def validate_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
        from prefect.exceptions import ParameterTypeError

        try:
            return original(parameters)
        except ParameterTypeError as error:
            found = _NOT_FOUND.search(str(error.__cause__ or ""))
            if found is None:
                raise
            name, block_type = found.groups()
            raise ParameterTypeError(
                f"no saved {block_type} block named {name!r} (python -m deployments.setup "
                "saves the default ones, e.g. 'offline'; any other: LLMProvider(...).save(NAME))"
            ) from None

    obj.validate_parameters = validate_parameters  # type: ignore[attr-defined]
    return obj
