"""Result tables: rows (dicts) as aligned text that notebooks show as HTML, and as CSV or JSON files.

``format_table(rows)`` is how every notebook prints results (runs, sweeps, model comparisons,
dataset splits); ``save_table(rows, path)`` keeps them next to the run folders.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence


def _columns(rows: Iterable[Mapping]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _cell(value: Any) -> str:
    """A float with four significant digits, and from 1000 on as a whole number (``.4g`` would
    print 9999.5 as ``1e+04``)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1e3 else f"{value:.4g}"
    return str(value)


class Table(str):
    """A plain-text table that JupyterLab shows as an HTML table.

    It is the aligned text itself (``print`` it, write it to a log, compare its lines), and its
    ``repr`` is that text too, so a console shows the table, not a quoted string. As a cell's
    last value (or through ``display``) a notebook front end gets ``text/html`` beside the
    ``text/plain`` text; papermill stores both, nbval compares only the text.
    """

    def __new__(cls, text: str, rows: Sequence[Mapping[str, Any]] = (), columns: Sequence[str] = ()):
        table = super().__new__(cls, text)
        table.rows, table.columns = [dict(row) for row in rows], list(columns)
        return table

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        from html import escape

        numeric = _numeric(self.rows, self.columns)
        align = lambda right: ' style="text-align: right"' if right else ' style="text-align: left"'  # noqa: E731
        head = "".join(f"<th{align(right)}>{escape(str(column))}</th>"
                       for column, right in zip(self.columns, numeric))
        body = "".join("<tr>" + "".join(f"<td{align(right)}>{escape(_cell(row.get(column)))}</td>"
                                        for column, right in zip(self.columns, numeric)) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _numeric(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[bool]:
    return [all(isinstance(row.get(column), (int, float, type(None))) for row in rows) for column in columns]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Table:
    """Rows as an aligned plain-text table (numbers right-aligned, 4 significant digits): a
    :class:`Table`, a ``str`` that notebooks render as an HTML table."""
    columns = list(columns) if columns is not None else _columns(rows)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    numeric = _numeric(rows, columns)
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]

    def line(items: Sequence[str]) -> str:
        return "  ".join(text.rjust(width) if right else text.ljust(width)
                         for text, width, right in zip(items, widths, numeric)).rstrip()

    text = "\n".join([line(columns), line(["-" * width for width in widths]), *map(line, cells)])
    return Table(text, rows, columns)


def save_table(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows to ``path`` as CSV (``.csv``) or a JSON list (``.json``); returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"save_table writes .csv or .json files, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps([dict(row) for row in rows], indent=2, default=str) + "\n")
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_columns(rows))
            writer.writeheader()
            writer.writerows(rows)
    return path
