"""Model rows read with plain SQL, for the statements every step and decision runs.

On SQLite, building the ORM's query (or even a RawQuerySet's column mapping) cost
several times running it: a `get()` with a join about 0.4 ms, a raw() read 0.2 ms,
where the statement itself takes 0.04 ms. `Columns` names a model's columns once and
turns a row into an instance exactly as the ORM does: each value through its field's
database converters (dates from SQLite's text, JSON decoded, decimals), then
`Model.from_db`, so the instance is marked as loaded, and columns left out are
deferred (they load on first access, as with `defer()`).

Writes have their counterparts in states.py (`insert`, `update_if`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection as default_connection
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper

Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


class Columns[M: models.Model]:
    """The concrete columns of `model` (all but `exclude`) as a SELECT or RETURNING list
    names them, qualified by `table` when given (for joins)."""

    def __init__(self, model: type[M], *, exclude: Sequence[str] = (), table: str = "") -> None:
        self.model = model
        self.fields = [f for f in model._meta.concrete_fields if f.name not in exclude]
        prefix = f'"{table}".' if table else ""
        self.sql = ", ".join(f'{prefix}"{field.column}"' for field in self.fields)
        self.attnames = [field.attname for field in self.fields]
        # Per database vendor: (position, converters, column expression) of the columns
        # whose values need converting.
        self._converters: dict[str, list[tuple[int, list[Converter], Any]]] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def instance(self, row: Sequence[Any], connection: BaseDatabaseWrapper) -> M:
        """The model instance that `row` (these columns' values, in order) stores."""
        values = list(row)
        for position, converters, column in self._converters_for(connection):
            value = values[position]
            for convert in converters:
                value = convert(value, column, connection)
            values[position] = value
        return self.model.from_db(connection.alias, self.attnames, values)

    def _converters_for(
        self, connection: BaseDatabaseWrapper
    ) -> list[tuple[int, list[Converter], Any]]:
        found = self._converters.get(connection.vendor)
        if found is None:
            found = []
            for position, field in enumerate(self.fields):
                column = field.get_col(self.model._meta.db_table)
                converters = [
                    *connection.ops.get_db_converters(column),
                    *column.get_db_converters(connection),
                ]
                if converters:
                    found.append((position, converters, column))
            self._converters[connection.vendor] = found
        return found


def fetch[M: models.Model](
    columns: Columns[M],
    sql: str,
    params: Sequence[Any],
    *,
    connection: BaseDatabaseWrapper | None = None,
) -> list[M]:
    """Run `sql`, whose result has exactly `columns`, and return the instances."""
    connection = connection or default_connection
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [columns.instance(row, connection) for row in rows]
