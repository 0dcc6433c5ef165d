"""The documentation site: the strict offline build, the generated reference pages, and the descriptions they are
generated from (every config field and CLI parameter must say what it is)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import typer
import yaml

from kwx.docs import cli_reference, config_reference, schema_reference
from kwx.docs.build import PAGES, write_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as `make docs` builds it, from a copy of docs/ (the repository's docs/reference untouched)."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "docs", root / "docs", ignore=shutil.ignore_patterns("reference"))
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    write_reference(root / "docs" / "reference")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                            str(root / "mkdocs.yml"), "-d", str(root / "site")],
                           check=False, capture_output=True, text=True,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=120)
    assert build.returncode == 0, build.stderr + build.stdout
    return root / "site"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_committed_reference_pages_are_the_code_s(name):
    """docs/reference/*.md are committed (readable on any forge, linkable from README) and must equal what the code
    generates: a field, option, table or MLflow key changed without `make docs` fails here."""
    committed = ROOT / "docs" / "reference" / name
    assert committed.exists(), f"{committed} is missing: run `make docs`"
    assert committed.read_text(encoding="utf-8") == PAGES[name]() + "\n", (
        f"docs/reference/{name} is stale: run `make docs` and commit it")


def test_the_strict_build_passes_and_builds_every_page_of_the_nav(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True and config["theme"]["font"] is False

    def pages(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            yield from pages(value) if isinstance(value, list) else [value]

    for page in pages(config["nav"]):
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), page


class _External(HTMLParser):
    """<script src> and <link href> that leave the site, and elements that make Material fetch Mermaid from a CDN."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        url = values.get("src") if tag == "script" else values.get("href") if tag == "link" else None
        if url and re.match(r"(https?:)?//", url):
            self.found.append(f"<{tag}> {url}")
        if "mermaid" in (values.get("class") or "").split():
            self.found.append(f"<{tag} class=mermaid> (Material loads mermaid.js from unpkg.com)")


def test_no_page_loads_anything_from_the_internet(site):
    pages = sorted(site.rglob("*.html"))
    assert pages
    found = []
    for page in pages:
        parser = _External()
        parser.feed(page.read_text(encoding="utf-8"))
        found += [f"{page.relative_to(site)}: {item}" for item in parser.found]
    assert found == []


def test_an_external_script_or_font_would_be_found():
    parser = _External()
    parser.feed('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
                '<script src="//cdn.example/x.js"></script><script src="assets/local.js"></script>')
    assert len(parser.found) == 2


def test_every_config_field_has_a_description():
    models = {section.model for section in config_reference.all_sections()}
    missing = sorted(f"{model.__name__}.{name}" for model in models for name, info in model.model_fields.items()
                     if not (info.description or "").strip())
    assert missing == []


def test_every_cli_option_and_argument_has_help():
    missing = [f"{p.command} {p.name}" for c in cli_reference.commands() for p in c.parameters if not p.help.strip()]
    assert missing == []


def test_an_undocumented_cli_option_would_be_found():
    app = typer.Typer()

    @app.command()
    def run(count: int = typer.Option(1), verbose: bool = typer.Option(False, help="Say more.")):
        """Run."""

    [command] = cli_reference.commands(app)
    assert [p.name for p in command.parameters if not p.help] == ["--count"]


def _row(page: str, anchor_id: str) -> str:
    [row] = [line for line in page.splitlines() if f'<a id="{anchor_id}"></a>' in line]
    return row


def test_the_config_reference_lists_every_field_with_its_bounds():
    page = config_reference.render()
    for field in config_reference.all_fields():
        assert f'<a id="{field.anchor}"></a>' in page, field.path
    assert "(0, 1e9]" in _row(page, "rt-execution-bankroll_dollars")
    assert "[1, 1e6]" in _row(page, "rt-fees-contracts")
    assert "[0.5, 3600]" in _row(page, "rt-tick_seconds")
    assert "[0, 4294967295]" in _row(page, "train-seed")
    assert "`required`" in _row(page, "train-city")
    assert "one of: between, greater, less" in _row(page, "rt-markets-bracket")
    assert "number or null" in _row(page, "rt-execution-taker_fallback_cents")
    assert "train-vc_features-city-minute_features" in page


def test_the_cli_and_schema_references_cover_every_command_and_table():
    cli = cli_reference.render()
    for command in cli_reference.commands():
        assert f"{{#{command.anchor}}}" in cli
        for parameter in command.parameters:
            assert f'<a id="{parameter.anchor}"></a>' in cli
    assert '<a id="kwx-train--trials"></a>' in cli and "{#kwx-ingest-kalshi}" in cli
    schema = schema_reference.render()
    for table in schema_reference.tables():
        assert f"{{#{table.name}}}" in schema
        assert schema_reference.table_descriptions()[table.name].strip(), f"{table.name}: its class has no docstring"
    assert "CHECK" not in schema and "`side IN ('yes', 'no')`" in schema


def test_the_benchmark_page_shows_every_figure_its_verdict_and_what_did_not_run(tmp_path):
    """docs/reference/benchmarks.md renders `make bench FULL=1`'s JSON: machine and load, each judged figure with its
    target and verdict, and a benchmark that was skipped or failed as such (never silently left out)."""
    from kwx.docs import benchmark_reference

    judged = [{"name": "paper day / signals day", "value": 1.79, "comparison": "<=", "target": 1.3, "unit": "",
               "met": False},
              {"name": "signals tick p99", "value": 4.2, "comparison": "<", "target": 5, "unit": " ms", "met": True}]
    result = {"size": "full", "started_at": "2026-12-06T11:07:18+00:00",
              "machine": {"cores": 2, "memory_gib": 23.5, "processor": "x86_64", "python": "3.11.7",
                          "versions": {"kwx": "0.1.0", "psycopg2-binary": None}, "commit": "abc1234+changes",
                          "load_average_start": [0.5, 1.0, 1.5], "load_average_end": [1.2, 1.1, 1.0]},
              "benchmarks": [{"bench": "rt_tick", "command": "bench/rt_tick.py", "what": "a day of ticks",
                              "summary": "paper 29.1 s; signals 16.2 s", "judged": judged},
                             {"bench": "dataset-postgres", "skipped": "no PostgreSQL at postgresql://h/db"},
                             {"bench": "resolve", "failed": True, "output_tail": ["...", "PromotionRefused: gates"]}]}
    path = tmp_path / "full.json"
    path.write_text(json.dumps(result))
    page = benchmark_reference.render(path)
    assert "commit `abc1234+changes` on 2 cores" in page and "load average 0.50, 1.00, 1.50 at the start" in page
    assert "kwx 0.1.0" in page and "psycopg2" not in page
    assert "`.venv/bin/python bench/rt_tick.py`" in page
    assert "paper day / signals day: 1.79 (target &lt;= 1.3, **missed**)" in page
    assert "signals tick p99: 4.2 ms (target &lt; 5 ms, met)" in page
    assert "skipped: no PostgreSQL at postgresql://h/db" in page and "failed: ... PromotionRefused: gates" in page
    assert "(x86_64, 23.5 GiB)" in page  # a result written before the suite recorded the CPU's model
    result["machine"]["cpu_model"] = "AMD EPYC 7B13"
    path.write_text(json.dumps(result))
    assert "on 2 cores (AMD EPYC 7B13, x86_64, 23.5 GiB)" in benchmark_reference.render(path)
    assert "No full benchmark result" in benchmark_reference.render(tmp_path / "absent.json")
