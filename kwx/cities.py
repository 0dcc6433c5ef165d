"""The cities kwx trades: settlement station, time zone and Kalshi series for each.

Kalshi settles these markets on the NWS Daily Climate Report of one station, so the station
(not the city name) is what weather data must be locked to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class City:
    key: str
    name: str
    station: str
    timezone: str
    series: str
    # The settlement station's coordinates (NOAA station metadata): weather-model forecasts are read there.
    latitude: float
    longitude: float

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def standard_offset(self) -> timedelta:
        """UTC offset of local *standard* time; the climate day never shifts for DST."""
        january = datetime(2001, 1, 15, 12, tzinfo=self.zone)
        return january.utcoffset() - january.dst()

    @property
    def vc_location(self) -> str:
        """Visual Crossing location that locks the query to the settlement station."""
        return f"stn:{self.station}"


CITIES: dict[str, City] = {
    c.key: c
    for c in (
        City("chicago", "Chicago", "KMDW", "America/Chicago", "KXHIGHCHI", 41.7860, -87.7524),
        City("nyc", "New York City", "KNYC", "America/New_York", "KXHIGHNY", 40.7789, -73.9692),
        City("miami", "Miami", "KMIA", "America/New_York", "KXHIGHMIA", 25.7881, -80.3169),
        City("austin", "Austin", "KAUS", "America/Chicago", "KXHIGHAUS", 30.1831, -97.6799),
        City("denver", "Denver", "KDEN", "America/Denver", "KXHIGHDEN", 39.8466, -104.6562),
        City("la", "Los Angeles", "KLAX", "America/Los_Angeles", "KXHIGHLAX", 33.9382, -118.3866),
        City("philadelphia", "Philadelphia", "KPHL", "America/New_York", "KXHIGHPHIL", 39.8683, -75.2311),
    )
}

CITY_BY_SERIES: dict[str, City] = {c.series: c for c in CITIES.values()}

# Visual Crossing's minute data for Central Park is not the settlement station's, so its
# dew point / humidity / wind would leak a different station into the features (seed step 0).
EXCLUDED_VC_CITIES: frozenset[str] = frozenset({"nyc"})
VC_EXCLUDABLE_COLUMNS: tuple[str, ...] = ("dew_f", "humidity_pct", "wind_mph")


class UnknownCityError(ValueError):
    """A city key kwx does not know; the message lists the known ones."""


def get_city(key: str) -> City:
    try:
        return CITIES[key]
    except KeyError:
        raise UnknownCityError(f"unknown city {key!r}; known cities: {', '.join(sorted(CITIES))}") from None


def city_for_series(series: str) -> City:
    try:
        return CITY_BY_SERIES[series]
    except KeyError:
        known = ", ".join(sorted(CITY_BY_SERIES))
        raise UnknownCityError(f"unknown Kalshi series {series!r}; known series: {known}") from None
