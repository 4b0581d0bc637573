"""The report's table pages: each table as an HTML page carrying its CSV (the browser test of a whole
report is in tests/test_workflow.py, on its smoke run)."""
import base64

import pandas as pd
import pytest

from coral import lineage, tables


def test_a_table_page_shows_the_table_and_carries_the_csv(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"method": ["ddpm", "coral<b>"], "fid": [12.34567, float("nan")], "steps": [50, 50]}) \
        .to_csv(csv, index=False)
    lineage.record([csv], "test", [], {}, {})
    tables.html_page(csv, tmp_path / "t.html", "A & B", "main_table")
    page = (tmp_path / "t.html").read_text()
    assert "<title>A &amp; B</title>" in page and "coral&lt;b&gt;" in page
    assert "<td>12.35</td>" in page and "<td></td>" in page  # 4 significant digits, missing value empty
    assert "td:nth-child(2), td:nth-child(3) { text-align: right; }" in page
    assert 'download="t.csv" href="data:text/csv;base64,' in page and "2 rows" in page
    embedded = page.split("data:text/csv;base64,", 1)[1].split('"', 1)[0]
    assert base64.b64decode(embedded) == csv.read_bytes()
    assert lineage.verify(tmp_path / "t.html", "page", "p") is not None


def test_a_damaged_table_is_one_line_and_no_page(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,2\n")
    lineage.record([csv], "test", [], {}, {})
    csv.write_text("a,b\n1,3\n")
    with pytest.raises(lineage.DamagedArtifact, match="rerun rule main_table"):
        tables.html_page(csv, tmp_path / "t.html", "t", "main_table")
    assert not (tmp_path / "t.html").exists()
