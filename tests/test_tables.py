"""Result tables: aligned text, HTML in a notebook, CSV and JSON files."""
from __future__ import annotations

import csv
import json

import pytest

from nmeplib.tables import format_table, save_table


def test_format_and_save_table(tmp_path):
    rows = [{"name": "lr=0.01", "best_val_acc": 97.123456, "epochs": 2, "status": "ran"},
            {"name": "lr=0.1", "best_val_acc": None, "epochs": 10, "status": "failed", "error": "nan"}]
    assert format_table(rows).splitlines() == [
        "name     best_val_acc  epochs  status  error",
        "-------  ------------  ------  ------  -----",
        "lr=0.01         97.12       2  ran",
        "lr=0.1                     10  failed  nan"]
    assert format_table(rows, ["epochs"]).splitlines() == ["epochs", "------", "     2", "    10"]
    with open(save_table(rows, tmp_path / "t.csv"), newline="") as f:
        read = list(csv.DictReader(f))
    assert read[0]["best_val_acc"] == "97.123456" and read[1]["error"] == "nan" and read[0]["error"] == ""
    assert json.loads(save_table(rows, tmp_path / "out" / "t.json").read_text()) == rows
    with pytest.raises(ValueError, match="csv or .json"):
        save_table(rows, tmp_path / "t.txt")


def test_tables_render_as_html_and_stay_text():
    rows = [{"name": "a<b", "acc": 97.123456}, {"name": "c", "acc": None}]
    table = format_table(rows)
    assert isinstance(table, str) and str(table) == repr(table) == table  # text in a console or a log
    assert table.splitlines()[2].startswith("a<b") and table.splitlines()[2].endswith("97.12")
    html = table._repr_html_()
    assert html.startswith("<table>") and "<th" in html and "a&lt;b" in html and ">97.12</td>" in html
    from IPython.lib.pretty import pretty

    assert pretty(table) == str(table)  # IPython's text/plain: the table, not a quoted string


def test_large_numbers_print_whole_and_small_ones_with_four_digits():
    rows = [{"img_per_s": 12345.6}, {"img_per_s": 9999.5}, {"img_per_s": 1234.4}, {"img_per_s": 999.94},
            {"img_per_s": 0.000123456}]
    assert format_table(rows).splitlines()[2:] == ["    12346", "    10000", "     1234", "    999.9", "0.0001235"]


def test_html_rows_are_whole_rows():
    html = format_table([{"name": "a", "acc": 1.5}, {"name": "b", "acc": 2.0}])._repr_html_()
    assert html.count("<tr>") == html.count("</tr>") == 3
    assert ('<tbody><tr><td style="text-align: left">a</td><td style="text-align: right">1.5</td></tr>'
            '<tr><td style="text-align: left">b</td><td style="text-align: right">2</td></tr></tbody>') in html


def test_save_table_makes_nested_folders_and_writes_any_value_as_text(tmp_path):
    from pathlib import Path

    rows = [{"output": Path("runs/a"), "acc": 1.0}]
    saved = save_table(rows, tmp_path / "a" / "b" / "t.json")
    assert json.loads(saved.read_text()) == [{"output": "runs/a", "acc": 1.0}]
    with open(save_table(rows, tmp_path / "c" / "d" / "t.csv"), newline="") as f:
        assert list(csv.DictReader(f)) == [{"output": "runs/a", "acc": "1.0"}]
