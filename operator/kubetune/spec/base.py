"""The base model of every Kubetune API type: camelCase in YAML, snake_case in Python."""

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """A part of a Kubetune manifest. Unknown fields are errors, so that a typo is caught."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    def to_manifest(self) -> dict[str, Any]:
        """The object as it is written in YAML: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class OpenModel(ApiModel):
    """A part that mirrors a Kubernetes type: fields we do not model are kept as they are."""

    model_config = ConfigDict(extra="allow")
