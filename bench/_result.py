"""What a benchmark hands `make bench` (bench/suite.py): its figures and the ratios it is judged by, as JSON.

A benchmark prints its figures for a reader and, given ``--json PATH``, writes the same figures there. Each
judged ratio is printed with its target, so a noisy machine still gives a figure comparable across runs: the
two sides of a ratio are measured inside one run, under the same load.
"""

from __future__ import annotations

import argparse
import json
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path

COMPARISONS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Judged:
    """One figure a benchmark is judged by, beside its target: ``value`` ``comparison`` ``target``."""

    name: str
    value: float
    comparison: str
    target: float
    unit: str = ""

    @classmethod
    def from_dict(cls, recorded: dict) -> Judged:
        return cls(*(recorded[name] for name in ("name", "value", "comparison", "target", "unit")))

    @property
    def met(self) -> bool:
        return COMPARISONS[self.comparison](self.value, self.target)

    def line(self) -> str:
        verdict = "met" if self.met else "MISSED"
        return (f"judged: {self.name} {self.value:.3g}{self.unit} (target {self.comparison} {self.target:g}"
                f"{self.unit}): {verdict}")


@dataclass
class BenchResult:
    bench: str
    command: str
    what: str
    summary: str  # one line of the figures, as the documentation's table shows them
    figures: dict[str, float | int | str] = field(default_factory=dict)
    judged: list[Judged] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self) | {"judged": [asdict(j) | {"met": j.met} for j in self.judged]}


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the figures and judged ratios here as JSON (what `make bench` collects)")


def report(result: BenchResult, json_path: Path | None) -> None:
    """Print the judged ratios and, when asked, write the whole result as JSON."""
    for judged in result.judged:
        print(judged.line())
    if json_path is not None:
        json_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
