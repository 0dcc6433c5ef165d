from datetime import timedelta

import pytest

from kwx.cities import CITIES, EXCLUDED_VC_CITIES, city_for_series, get_city


def test_canonical_cities():
    expected = {
        "chicago": ("KMDW", "America/Chicago", "KXHIGHCHI"),
        "nyc": ("KNYC", "America/New_York", "KXHIGHNY"),
        "miami": ("KMIA", "America/New_York", "KXHIGHMIA"),
        "austin": ("KAUS", "America/Chicago", "KXHIGHAUS"),
        "denver": ("KDEN", "America/Denver", "KXHIGHDEN"),
        "la": ("KLAX", "America/Los_Angeles", "KXHIGHLAX"),
        "philadelphia": ("KPHL", "America/New_York", "KXHIGHPHIL"),
    }
    assert {k: (c.station, c.timezone, c.series) for k, c in CITIES.items()} == expected


def test_excluded_vc_cities_are_known_and_only_nyc():
    assert frozenset({"nyc"}) == EXCLUDED_VC_CITIES
    assert set(CITIES) >= EXCLUDED_VC_CITIES


@pytest.mark.parametrize(("key", "hours"), [("chicago", -6), ("nyc", -5), ("denver", -7), ("la", -8)])
def test_standard_offsets(key, hours):
    assert get_city(key).standard_offset == timedelta(hours=hours)


def test_lookups_name_unknown_values():
    assert city_for_series("KXHIGHCHI").key == "chicago"
    assert get_city("chicago").vc_location == "stn:KMDW"
    with pytest.raises(ValueError, match="unknown city 'gotham'"):
        get_city("gotham")
