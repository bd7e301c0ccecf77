"""meta.k8s.io/v1 Tables, the answer to `kubectl get`: a CRD's additionalPrinterColumns
evaluated on each object (as apiextensions-apiserver's tableconvertor does) and the usual
columns of the built-in kinds (`printers`, as the API server's printers do for pods,
namespaces, events).

kubectl asks for them with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`; a plain list
would make it show NAME and AGE only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from kubetune_localcluster.ages import age
from kubetune_localcluster.jsonpath import JsonPathError, jsonpath_values
from kubetune_localcluster.printers import AGE_COLUMN, COMPUTED, builtin_columns

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)


def _text(value: Any) -> str:
    """A value as kubectl's JSONPath printer prints it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _cell(column_type: str, value: Any, now: datetime) -> Any:
    """cellForJSONValue: the cell for a found value, None when it has the wrong type."""
    if value is None:
        return None
    if column_type == "string":
        return _text(value)
    if column_type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if column_type == "date" and isinstance(value, str):
        return age(value, now)
    return None


def _column_cell(column: dict[str, Any], obj: dict[str, Any], now: datetime) -> Any:
    compute = column.get("compute")
    if compute is not None:
        return COMPUTED[compute](obj, now)
    try:
        found = jsonpath_values(obj, column["jsonPath"])
    except JsonPathError:
        return None
    if not found:
        return None  # a missing value is an empty cell (null), not "<none>"
    return _cell(column["type"], found[0], now)


def _definition(column: dict[str, Any]) -> dict[str, Any]:
    description = column.get("description") or (
        f"Custom resource definition column (in JSONPath format): {column.get('jsonPath', '')}"
    )
    return {
        "name": column["name"],
        "type": column["type"],
        "format": column.get("format", ""),
        "description": description,
        "priority": column.get("priority", 0),
    }


def _row_object(obj: dict[str, Any], include_object: str) -> dict[str, Any] | None:
    if include_object == "Object":
        return obj
    if include_object == "Metadata":
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return None


def table(
    objects: list[dict[str, Any]],
    columns: list[dict[str, Any]] | None,
    *,
    kind: str,
    include_object: str = "Metadata",
    now: datetime,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: Name first, then the columns (JSONPath evaluated on each object,
    type-formatted: integer, number, string, boolean, date as age like kubectl '5m'), rows with
    `object` as PartialObjectMetadata (includeObject=Metadata), Object, or None.

    `columns` None means the kind's built-in columns (builtin_columns). The caller sets
    metadata.resourceVersion (and continue) as for the list it converts."""
    if include_object not in ("None", "Metadata", "Object"):
        raise ValueError(f"includeObject must be None, Metadata or Object, not {include_object!r}")
    if columns is None:
        columns = builtin_columns(kind) or [AGE_COLUMN]
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": NAME_DESCRIPTION,
            "priority": 0,
        },
        *(_definition(c) for c in columns),
    ]
    rows = []
    for obj in objects:
        cells = [obj.get("metadata", {}).get("name", "")]
        cells += [_column_cell(column, obj, now) for column in columns]
        row: dict[str, Any] = {"cells": cells}
        included = _row_object(obj, include_object)
        if included is not None:
            row["object"] = included
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": definitions,
        "rows": rows,
    }
