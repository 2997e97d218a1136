"""The report page: Markdown/CSV tables exactly, escaping, offline-ness, and a real Chromium
render (every image loads, no console errors, a screenshot) plus a broken page it must flag."""

from __future__ import annotations

import html
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hwbed.report.browser import find_chromium, render  # noqa: E402
from hwbed.report.page import (  # noqa: E402
    Figure,
    Section,
    Table,
    markdown_table,
    png_size,
    write_page,
    write_tables,
)

needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="chromium not installed (apt-get install chromium; .ci/run installs it)",
)

KNOWN = pd.DataFrame(
    {
        "model": ["resnet20", "resnet20-xnor", "a|b"],
        "eps": [8 / 255, 0.5, np.nan],
        "n": [24, 24, 3],
        "bit_exact": [True, False, True],
        "p": [1.234e-5, 0.0, None],
        "note": ["ok", None, "<script>"],
    }
)
KNOWN_MD = (
    "| model | eps | n | bit_exact | p | note |\n"
    "|---|---:|---:|---|---:|---|\n"
    "| resnet20 | 0.031 | 24 | yes | 1.23e-05 | ok |\n"
    "| resnet20-xnor | 0.500 | 24 | no | 0.000 | \u2013 |\n"
    "| a\\|b | \u2013 | 3 | yes | \u2013 | <script> |\n"
)


def _plot(path, kind: str):
    fig, ax = plt.subplots(figsize=(4.8, 3.2), dpi=100)
    x = np.linspace(0, 32, 9)
    if kind == "line":
        ax.plot(x, np.exp(-x / 10), marker="o", label="resnet20")
        ax.plot(x, np.exp(-x / 6), marker="s", label="resnet20-xnor")
        ax.set(xlabel="eps (px)", ylabel="robust accuracy")
        ax.legend()
    else:
        ax.bar(["fgsm", "pgd", "deepfool"], [0.4, 0.2, 0.1])
        ax.set(ylabel="robust accuracy")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _wide() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    cols = {f"metric_{i:02d}": rng.random(4) for i in range(24)}
    return pd.DataFrame({"executable": ["twin", "sim", "fpga", "twin-float"], **cols})


def _page(tmp_path):
    """A page of two sections: two tables (one wide, with CSV/Markdown copies), two plots."""
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    line = _plot(out / "plots" / "robust_vs_eps.png", "line")
    bars = _plot(out / "plots" / "by_attack.png", "bar")
    csv, md = write_tables(KNOWN, out / "tables" / "summary")
    wide_csv, wide_md = write_tables(_wide(), out / "tables" / "wide")
    sections = [
        Section(
            "Summary",
            intro="Robust accuracy per model & attack.\n\nSecond paragraph <b>not bold</b>.",
            tables=[Table("Cells", KNOWN, csv, md, caption="One row per cell.")],
            figures=[Figure("Robust accuracy vs eps", line, caption="Linf, 24 images")],
        ),
        Section(
            "Attacks",
            tables=[Table("Wide metrics", _wide(), wide_csv, wide_md)],
            figures=[Figure("By attack", bars)],
        ),
    ]
    meta = {"store": str(tmp_path / "store"), "hwbed": "0.1.0", "date": "2025-01-01"}
    return write_page(out / "index.html", "hwbed report <test>", sections, meta), sections


def test_markdown_table_exact():
    assert markdown_table(KNOWN) == KNOWN_MD


def test_markdown_table_index_and_empty():
    frame = pd.DataFrame({"x": [1.0, 2.5]}, index=pd.Index(["a", "b"], name="k"))
    assert markdown_table(frame) == "| k | x |\n|---|---:|\n| a | 1.000 |\n| b | 2.500 |\n"
    unnamed = pd.DataFrame({"x": [True]}, index=[7])  # an unnamed index is dropped
    assert markdown_table(unnamed) == "| x |\n|---|\n| yes |\n"
    assert markdown_table(pd.DataFrame({"x": pd.Series([], dtype=float)})) == "| x |\n|---:|\n"


def test_write_tables_round_trip(tmp_path):
    csv, md = write_tables(KNOWN, tmp_path / "sub" / "summary")
    assert (csv.name, md.name) == ("summary.csv", "summary.md")
    assert md.read_text(encoding="utf-8") == KNOWN_MD
    back = pd.read_csv(csv)
    pd.testing.assert_frame_equal(back, KNOWN, check_dtype=False)
    assert back["eps"][0] == 8 / 255  # full precision, not the 3 decimals shown


def test_png_size(tmp_path):
    png = _plot(tmp_path / "a.png", "bar")
    assert png_size(png.read_bytes()) == (480, 320)
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + bytes(30))


def test_page_escapes_and_is_offline(tmp_path):
    path, _ = _page(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text  # the <script> cell, the title and intro stay text
    assert "&lt;script&gt;" in text and "&lt;b&gt;not bold&lt;/b&gt;" in text
    assert "<title>hwbed report &lt;test&gt;</title>" in text
    assert not re.search(r"https?:", text, re.I)
    assert not re.search(r"<link\b|@import|url\(", text, re.I)
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert 'width="480" height="320"' in text
    for href in ("plots/robust_vs_eps.png", "tables/summary.csv", "tables/summary.md"):
        assert f'href="{href}"' in text
        assert (path.parent / href).is_file()
    for anchor in re.findall(r'href="#([^"]+)"', text):  # every TOC entry has its target
        assert f'id="{anchor}"' in text
    assert "0.031" in text and "1.23e-05" in text and ">yes<" in text and ">\u2013<" in text


@needs_chromium
def test_page_renders_in_chromium(tmp_path):
    path, sections = _page(tmp_path)
    shot = tmp_path / "screenshot.png"
    seen = render(path, screenshot=shot)
    print(f"screenshot: {seen.screenshot}")
    assert html.escape("hwbed report <test>") in seen.dom
    for section in sections:
        assert f">{html.escape(section.title)}</h2>" in seen.dom
        for item in section.tables + section.figures:
            assert html.escape(item.title) in seen.dom
    assert seen.console_errors == []
    assert seen.images == seen.images_loaded == 2
    assert seen.ok
    assert seen.screenshot == shot.resolve()
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and png_size(data) == (1280, 2000)
    assert not list(path.parent.glob(".*render*"))  # the probe copy is gone


@needs_chromium
def test_broken_page_is_caught(tmp_path):
    good = _plot(tmp_path / "good.png", "line")
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>broken</title></head><body>'
        f'<h1>broken</h1><img src="{good.name}" alt="ok"><img src="missing.png" alt="gone">'
        '<script>console.log("all good"); undefinedFunction();</script></body></html>',
        encoding="utf-8",
    )
    seen = render(page)
    assert not seen.ok
    assert (seen.images, seen.images_loaded) == (2, 1)
    assert any("missing.png" in e for e in seen.console_errors), seen.console_errors
    assert any("undefinedFunction" in e for e in seen.console_errors), seen.console_errors
    assert not any("all good" in e for e in seen.console_errors)
    assert any(m.startswith("all good") for m in seen.console)
    assert seen.screenshot is None
    assert "<h1>broken</h1>" in seen.dom and "hwbed-render" not in seen.dom


def test_render_without_chromium(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><title>x</title>", encoding="utf-8")
    with pytest.raises(RuntimeError, match="chromium not found"):
        render(page)


def test_whole_number_columns_print_without_decimals():
    frame = pd.DataFrame({"lut": [48534.0, float("nan")], "acc": [1.0, 0.5], "flag": [0.0, 1.0]})
    text = markdown_table(frame)
    assert "| 48534 | 1.000 | 0.000 |" in text and "| – | 0.500 | 1.000 |" in text
