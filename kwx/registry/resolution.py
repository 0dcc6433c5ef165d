"""Which registered window trades a given date: pure, over a table of version facts."""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    stage: str = ""  # the registry stage it is in now
    pending: str | None = None  # the promotion that is moving it into ``stage``, if one did not finish

    @property
    def model_id(self) -> str:
        """``name/version``: what signals record as the model that made them, and the ``models:/`` path."""
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class PromotionRecord:
    """A finished promotion: written in one registry call, after which its versions trade and its
    replaced versions stop, all at once. ``id`` sorts in promotion order."""

    id: str
    stage: str
    run_id: str
    at: datetime
    promoted: tuple[str, ...]
    replaced: tuple[str, ...]


def stage_members(versions: list[VersionFacts], records: list[PromotionRecord], stage: str) -> list[VersionFacts]:
    """The versions that trade at ``stage``: the registry's stage, as the finished promotions left it.

    A version trades when it is in ``stage`` and the newest finished promotion naming it promoted it to
    ``stage`` (``promoted_at`` becomes that promotion's time), or, when no promotion record names it (it
    was promoted before records were kept), its stage alone says so. A version still pending an
    unfinished promotion never trades: a killed ``kwx promote`` leaves the previous set trading.
    """
    finished = {r.id for r in records}
    newest: dict[str, tuple[PromotionRecord, bool]] = {}
    for record in sorted(records, key=lambda r: r.id):
        newest.update({v: (record, True) for v in record.promoted})
        newest.update({v: (record, False) for v in record.replaced})
    members = []
    for f in versions:
        if f.stage.lower() != stage.lower() or (f.pending is not None and f.pending not in finished):
            continue
        record, promoted = newest.get(f.version, (None, True))
        if record is None:
            members.append(f)
        elif promoted and record.stage.lower() == stage.lower():
            members.append(replace(f, promoted_at=record.at))
    return members


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
