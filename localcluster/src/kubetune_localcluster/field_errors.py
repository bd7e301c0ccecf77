"""The API server's field errors: the causes of a 422 worded as apimachinery's field.Error
words them, the field paths they name, and InvalidObject with the Status it is answered with.
"""

from __future__ import annotations

from typing import Any

from kubetune_localcluster.compiled_schemas import MISSING
from kubetune_localcluster.go_format import go_value

Cause = dict[str, str]

_REASON_WORDS = {
    "FieldValueInvalid": "Invalid value",
    "FieldValueTypeInvalid": "Invalid value",
    "FieldValueRequired": "Required value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
    "FieldValueTooMany": "Too many",
}
_NO_VALUE = frozenset({"FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"})


def field_error(reason: str, path: str, value: Any = MISSING, detail: str = "") -> Cause:
    words = _REASON_WORDS[reason]
    # Required, Forbidden and TooLong print no value (field.Error.ErrorBody).
    if value is not MISSING and reason not in _NO_VALUE:
        words += f": {go_value(value)}"
    if detail:
        words += f": {detail}"
    return {"reason": reason, "message": words, "field": path}


def join_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class InvalidObject(Exception):  # noqa: N818 (the name the apiserver module uses)
    """The object is refused. code 422 (Invalid): causes are Kubernetes StatusCause dicts
    {"reason", "message", "field"}; code 400 (BadRequest): a strict decoding error (unknown
    fields under fieldValidation=Strict), worded in `message` as the API server words it."""

    def __init__(self, causes: list[Cause], *, code: int = 422, message: str = "") -> None:
        self.causes = causes
        self.code = code
        self.message = message or "; ".join(_cause_text(c) for c in causes)
        super().__init__(self.message)


def _cause_text(cause: Cause) -> str:
    return f"{cause.get('field') or '<nil>'}: {cause['message']}"


def invalid_status(kind: str, group: str, name: str, error: InvalidObject) -> dict[str, Any]:
    """The Status body the API server answers with for `error` (errors.NewInvalid, or the
    BadRequest of a strict decoding error)."""
    if error.code == 400:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": error.message,
            "reason": "BadRequest",
            "code": 400,
        }
    qualified = f"{kind}.{group}" if group else kind
    texts: list[str] = []
    for cause in error.causes:  # ToAggregate drops repeated messages
        text = _cause_text(cause)
        if text not in texts:
            texts.append(text)
    listed = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    message = f'{qualified} "{name}" is invalid'
    if texts:
        message += f": {listed}"
    details: dict[str, Any] = {"name": name, "group": group, "kind": kind}
    details["causes"] = [
        {k: v for k, v in cause.items() if v != "" or k != "field"} for cause in error.causes
    ]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Invalid",
        "details": details,
        "code": 422,
    }
