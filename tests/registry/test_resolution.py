"""The pure rule: which promoted window trades a date."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from kwx.registry.resolution import NoModelError, PromotionRecord, VersionFacts, resolve, stage_members


def _facts(version, test_start, test_end, promoted=datetime(2025, 9, 1, tzinfo=UTC), run="r1"):
    return VersionFacts("kwx-chicago-between", str(version), f"win_x{version}", test_start, test_end, run, promoted)


TABLE = [
    _facts(1, date(2025, 7, 30), date(2025, 8, 5)),
    _facts(2, date(2025, 8, 6), date(2025, 8, 12)),
    _facts(3, date(2025, 8, 13), date(2025, 8, 19)),
]


def _resolve(table, day):
    return resolve(table, day, city="chicago", bracket="between", stage="Production")


@pytest.mark.parametrize(("day", "version"), [
    (date(2025, 7, 30), "1"), (date(2025, 8, 5), "1"),  # both boundary days of window 1
    (date(2025, 8, 6), "2"), (date(2025, 8, 10), "2"), (date(2025, 8, 19), "3"),
])
def test_inside_and_on_the_boundaries(day, version):
    choice = _resolve(TABLE, day)
    assert choice.facts.version == version and choice.stale_days == 0
    assert "inside the test period" in choice.reason


def test_after_the_last_window_is_stale():
    choice = _resolve(TABLE, date(2025, 8, 30))
    assert choice.facts.version == "3" and choice.stale_days == 11
    assert "ended 11 day(s) earlier" in choice.reason


def test_before_the_first_window_and_nothing_promoted_are_errors():
    with pytest.raises(NoModelError, match=r"chicago/between on 2025-07-01 at stage Production.*2025-07-30"):
        _resolve(TABLE, date(2025, 7, 1))
    with pytest.raises(NoModelError, match="no version is in that stage"):
        _resolve([], date(2025, 8, 1))


def test_overlapping_promotions_newest_wins():
    newer = _facts(9, date(2025, 8, 8), date(2025, 8, 14), promoted=datetime(2025, 9, 2, tzinfo=UTC), run="r2")
    choice = _resolve([*TABLE, newer], date(2025, 8, 13))
    assert choice.facts.version == "9" and "newest promotion of 2 covering windows" in choice.reason
    older_promotion = _facts(9, date(2025, 8, 8), date(2025, 8, 14), promoted=datetime(2025, 8, 2, tzinfo=UTC))
    assert _resolve([*TABLE, older_promotion], date(2025, 8, 13)).facts.version == "3"


def test_a_gap_uses_the_latest_window_before_it():
    gapped = [TABLE[0], _facts(5, date(2025, 9, 1), date(2025, 9, 7))]
    choice = _resolve(gapped, date(2025, 8, 20))
    assert choice.facts.version == "1" and choice.stale_days == 15


def _version(version, stage="Production", pending=None, test_start=date(2025, 8, 6), test_end=date(2025, 8, 12)):
    return VersionFacts("kwx-chicago-between", str(version), f"win_x{version}", test_start, test_end, "r",
                        datetime(2025, 9, 1, tzinfo=UTC), stage=stage, pending=pending)


def _record(seq, promoted, replaced=(), stage="Production", at=datetime(2025, 9, 3, tzinfo=UTC)):
    return PromotionRecord(f"{seq:06d}-abcd", stage, "run", at, tuple(promoted), tuple(replaced))


def _members(versions, records, stage="Production"):
    return [f.version for f in stage_members(versions, records, stage)]


def test_unrecorded_versions_trade_by_their_stage():
    versions = [_version(1), _version(2, stage="Archived"), _version(3, stage="Staging")]
    assert _members(versions, []) == ["1"] and _members(versions, [], "staging") == ["3"]


def test_a_pending_promotion_changes_nothing_until_its_record_exists():
    # killed after moving version 2 in and before archiving version 1: version 1 still trades alone
    versions = [_version(1), _version(2, pending="000002-abcd"), _version(3, stage="None", pending="000002-abcd")]
    records = [_record(1, ["1"])]
    assert _members(versions, records) == ["1"]
    finished = [*records, _record(2, ["2", "3"], replaced=["1"])]
    # the record is the switch: version 3 not yet moved in, version 1 not yet archived, and still all new
    assert _members(versions, finished) == ["2"]
    assert _members([*versions[:2], _version(3, pending="000002-abcd")], finished) == ["2", "3"]


def test_the_newest_record_naming_a_version_decides_and_dates_it():
    at = datetime(2025, 9, 5, tzinfo=UTC)
    records = [_record(1, ["1"]), _record(2, ["2"], replaced=["1"]), _record(3, ["1"], replaced=["2"], at=at)]
    chosen = stage_members([_version(1), _version(2)], records, "Production")
    assert [f.version for f in chosen] == ["1"] and chosen[0].promoted_at == at
    # a version recorded for Staging is not at Production while its stage still says so (moved in, pending)
    assert _members([_version(1)], [_record(1, ["1"], stage="Staging")]) == []
    # archived by hand after its promotion: the stage says it does not trade
    assert _members([_version(1, stage="Archived")], [_record(1, ["1"])]) == []
