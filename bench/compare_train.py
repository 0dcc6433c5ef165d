"""Compare two `bench/train.py --json` results window by window: test scores and the chosen hyperparameters.

    .venv/bin/python bench/compare_train.py BEFORE.json AFTER.json

What a change to the search or the model is judged on besides its speed: each window's test log loss, Brier and
ECE and its cross-validated log loss, before -> after, with the mean and largest change of each, and the C,
l1_ratio and class weight each side chose. Reads the first worker count's run of each file (the windows' models
do not depend on how many processes trained them).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SCORES = ("test_log_loss", "test_brier", "test_ece", "cv_log_loss")


def window_outcomes(path: Path) -> dict[str, dict]:
    runs = json.loads(path.read_text(encoding="utf-8"))["figures"]
    return next(iter(runs.values()))["window_outcomes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = window_outcomes(args.before), window_outcomes(args.after)
    common = sorted(set(before) & set(after))
    print(f"{'window':<24}" + "".join(f"{k:>20}" for k in SCORES) + "  C, l1_ratio, class_weight before | after")
    for window in common:
        b, a = before[window], after[window]
        scores = "".join(f"{b[k]:.4f} -> {a[k]:.4f}".rjust(20) for k in SCORES)
        chosen = " | ".join(f"{float(x['C']):.3g}, {float(x['l1_ratio']):.2f}, {x['class_weight']}" for x in (b, a))
        print(f"{window:<24}{scores}  {chosen}")
    for key in SCORES:
        changes = [after[w][key] - before[w][key] for w in common]
        print(f"{key}: mean change {statistics.mean(changes):+.4f}, largest {max(changes, key=abs):+.4f}, "
              f"lower after in {sum(c < 0 for c in changes)} of {len(changes)} windows")
    for window in sorted(set(before) ^ set(after)):
        print(f"{window}: only {'before' if window in before else 'after'}")


if __name__ == "__main__":
    main()
