"""Which registered window trades a given date: pure, over a table of version facts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class VersionFacts:
    """What resolution needs to know about one registered version, read from its registry tags."""

    name: str
    version: str
    window: str
    test_start: date
    test_end: date
    run_id: str
    promoted_at: datetime | None
    feature_set: str = "elasticnet_rich"

    @property
    def model_id(self) -> str:
        """``name/version``: what signals record as the model that made them, and the ``models:/`` path."""
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class Resolution:
    facts: VersionFacts
    stale_days: int
    reason: str


class NoModelError(LookupError):
    """No promoted version can trade the date; the message names city, bracket, date and stage."""


def _newest(candidates: list[VersionFacts]) -> VersionFacts:
    # Newest promotion wins; within one promotion the higher version (registered later) wins.
    return max(candidates, key=lambda f: (f.promoted_at or _NEVER, int(f.version)))


def resolve(table: list[VersionFacts], target: date, *, city: str, bracket: str, stage: str) -> Resolution:
    """The window whose test period contains ``target``; after it, the latest earlier window (stale).

    Before every window, or with nothing promoted, there is no model: raising beats trading a model
    on dates it was never validated for.
    """
    what = f"{city}/{bracket} on {target} at stage {stage}"
    if not table:
        raise NoModelError(f"no model for {what}: no version is in that stage (promote a training run first)")
    covering = [f for f in table if f.test_start <= target <= f.test_end]
    if covering:
        chosen = _newest(covering)
        others = f" (newest promotion of {len(covering)} covering windows)" if len(covering) > 1 else ""
        return Resolution(chosen, 0, f"{target} is inside the test period {chosen.test_start}..{chosen.test_end} "
                                     f"of {chosen.window}{others}")
    earlier = [f for f in table if f.test_end < target]
    if not earlier:
        first = min(f.test_start for f in table)
        raise NoModelError(f"no model for {what}: the first promoted window starts testing on {first}")
    latest_end = max(f.test_end for f in earlier)
    chosen = _newest([f for f in earlier if f.test_end == latest_end])
    stale = (target - chosen.test_end).days
    return Resolution(chosen, stale, f"{target} is after every covering window; using {chosen.window}, "
                                     f"whose test period ended {stale} day(s) earlier")
