"""docs/reference/mlflow.md: what kwx writes to MLflow, rendered from ``kwx.tracking_layout``."""

from __future__ import annotations

from kwx import tracking_layout as layout
from kwx.docs.markdown import anchor, code, slug, text


def _table(prefix: str, entries: tuple[layout.Entry, ...], heading: str = "Key") -> list[str]:
    rows = [f"| {heading} | Description |", "|---|---|"]
    rows += [f"| {anchor(f'{prefix}-{slug(e.key)}')}{code(e.key)} | {text(e.description)} |" for e in entries]
    return [*rows, ""]


def render() -> str:
    lines = ["# MLflow layout", "",
             "Generated from `kwx/tracking_layout.py` by `make docs`; do not edit. A test checks every key a real "
             "training run, its promotion and a backtest log against that module. `{name}` in a key stands for "
             "any value listed under [placeholders](#placeholders).", "",
             "## Experiments {#experiments}", "", *_table("experiment", layout.EXPERIMENTS, "Experiment"),
             "## Runs {#runs}", "",
             "Every run kwx creates carries a `kwx.kind` tag naming its kind.", ""]
    for run in layout.RUNS:
        lines += [f"### {run.kind} {{#run-{slug(run.kind)}}}", "", text(run.description), "",
                  f"Experiment {code(run.experiment)}, run name {code(run.run_name)}.", ""]
        for part in ("tags", "params", "metrics", "artifacts"):
            entries = getattr(run, part)
            if entries:
                lines += [f"#### {run.kind}: {part} {{#run-{slug(run.kind)}-{part}}}", "",
                          *_table(f"{slug(run.kind)}-{part}", entries)]
    lines += ["## Registered models {#registered-models}", "",
              *_table("registered-model", (layout.REGISTERED_MODEL,), "Name"),
              "### Aliases {#aliases}", "", *_table("alias", layout.ALIASES, "Alias"),
              "### Registered model tags {#model-tags}", "", *_table("model-tag", layout.MODEL_TAGS, "Tag"),
              "### Version tags {#version-tags}", "", *_table("version-tag", layout.VERSION_TAGS, "Tag"),
              "## Placeholders {#placeholders}", "", "| Placeholder | Stands for |", "|---|---|"]
    lines += [f"| {code('{' + name + '}')} | {text(meaning)} |" for name, (_, meaning) in layout.PLACEHOLDERS.items()]
    return "\n".join([*lines, ""])
