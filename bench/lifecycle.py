"""Benchmark: one forward retrain, then `kwx monitor` passes over 50 registered versions.

    .venv/bin/python bench/lifecycle.py [--trials 6] [--versions 50] [--repeat 3]

Builds chicago demo data (2025-04-01..2025-10-05) in a temporary SQLite file and a temporary MLflow store.
1. `retrain` as of 2025-08-04 (chicago/between, 90 train days, --trials): wall time and the MLflow share
   (the training run's own logging timer).
2. --versions pending forward versions (the retrained one and copies of its model registered for earlier
   weeks, each with its own training and window run, as `kwx retrain` leaves them), then a monitor pass that
   scores every one of them, and a second pass, the steady state of a daily pass once all are evaluated.
   The MLflow share is the time spent inside MlflowClient calls and MLflow's model loading and artifact
   functions.
Targets on a 2-core machine: retrain under 60 s, a monitor pass over 50 versions under 10 s.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _workspace import scratch_workspace

REPO = Path(__file__).resolve().parents[1]
AS_OF = date(2025, 8, 4)


class MlflowTimer:
    """Wall time spent inside MLflow: every public MlflowClient method and the fluent model/artifact calls."""

    def __init__(self):
        self.seconds = 0.0
        self._depth = 0

    def wrap(self, owner, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if self._depth:  # an MLflow call made by another one is already being timed
                return original(*args, **kwargs)
            self._depth += 1
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self._depth -= 1

        setattr(owner, name, timed)

    def install(self) -> None:
        import mlflow.artifacts
        import mlflow.sklearn
        from mlflow.tracking import MlflowClient

        for name in dir(MlflowClient):
            if not name.startswith("_") and callable(getattr(MlflowClient, name)):
                self.wrap(MlflowClient, name)
        self.wrap(mlflow.sklearn, "load_model")
        self.wrap(mlflow.artifacts, "download_artifacts")
        self.wrap(mlflow.artifacts, "load_text")


def register_copies(client, outcome, count: int) -> None:
    """``count`` more pending forward versions of the retrained model, for the weeks before it."""
    from kwx.lifecycle.forward import forward_window
    from kwx.registry.versions import register_window_version

    source = client.get_model_version(outcome.model_name, outcome.version)
    parent = client.get_run(outcome.run_id)
    config_text = (Path(client.download_artifacts(outcome.run_id, "config.yaml"))).read_text()
    model_id = source.model_id or source.source.removeprefix("models:/")  # the logged model's id: m-...
    for k in range(1, count + 1):
        window = forward_window(AS_OF - timedelta(days=2 * k), 90, 7)  # inside the demo data
        new_parent = client.create_run(parent.info.experiment_id, run_name=f"train copy {k}",
                                       tags={**{t: v for t, v in parent.data.tags.items() if t.startswith("kwx.")}})
        client.log_text(new_parent.info.run_id, config_text, "config.yaml")
        client.set_terminated(new_parent.info.run_id)
        run = client.create_run(parent.info.experiment_id, run_name=window.name,
                                tags={"kwx.kind": "window", "kwx.window": window.name,
                                      "mlflow.parentRunId": new_parent.info.run_id})
        client.set_terminated(run.info.run_id)
        tags = {**{t: source.tags[t] for t in ("city", "bracket", "feature_set", "config_hash", "origin")},
                "window": window.name, "train_start": str(window.train_start), "train_end": str(window.train_end),
                "test_start": str(window.test_start), "test_end": str(window.test_end),
                "parent_run_id": new_parent.info.run_id, "evaluation": "pending"}
        register_window_version(client, outcome.model_name, source.source, run.info.run_id, tags, model_id=model_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6, help="path trials per window (the demo's count)")
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3, help="steady-state monitor passes to time")
    args = parser.parse_args()

    from mlflow.tracking import MlflowClient

    from kwx.config import load_config
    from kwx.data.demo import load_demo
    from kwx.lifecycle.monitor import monitor
    from kwx.lifecycle.retrain import retrain

    config = load_config(REPO / "configs" / "elasticnet_chi_between.yaml", overrides={"trials": args.trials})
    now = datetime(2025, 10, 6, 9, tzinfo=UTC)
    with scratch_workspace() as (_, engine):
        load_demo(engine, ["chicago"], date(2025, 4, 1), date(2025, 10, 5), seed=42)
        started = time.perf_counter()
        outcome = retrain(config, engine, as_of=AS_OF, now=now, promote=True)  # a Production family: drift runs too
        wall = time.perf_counter() - started
        t = outcome.timings
        print(f"retrain chicago/between as of {AS_OF} (90 train days, {args.trials} trials): wall {wall:.1f} s, "
              f"training run {t['wall_seconds']:.1f} s of which MLflow {t['mlflow_seconds']:.1f} s "
              f"= {100 * t['mlflow_fraction']:.1f} %")
        client = MlflowClient()
        register_copies(client, outcome, args.versions - 1)
        timer = MlflowTimer()
        timer.install()
        passes = []
        for label in ["first pass: scores every pending version"] + ["steady state"] * args.repeat:
            timer.seconds = 0.0
            started = time.perf_counter()
            report = monitor(client, engine, as_of=date(2025, 10, 6), now=now)
            seconds = time.perf_counter() - started
            passes.append(seconds)
            print(f"monitor pass over {args.versions} versions ({label}): {len(report.evaluated)} evaluated, "
                  f"{len(report.waiting)} waiting, {seconds:.2f} s, MLflow {timer.seconds:.2f} s "
                  f"= {100 * timer.seconds / seconds:.0f} %")
        if args.repeat:
            print(f"steady-state monitor pass: median {statistics.median(passes[1:]):.2f} s over {args.repeat}")
    print(f"(bench date {date.today()}; {config.summary()})")


if __name__ == "__main__":
    main()
