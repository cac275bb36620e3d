"""Go duration strings as users write them in spec.duration, spec.maxDuration and spec.caDuration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyward.pki.durations import format_duration, parse_duration

GO_MAX = timedelta(microseconds=(2**63 - 1) // 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2160h", timedelta(days=90)),
        ("1h30m", timedelta(minutes=90)),
        ("90m", timedelta(minutes=90)),
        ("10s", timedelta(seconds=10)),
        ("1.5h", timedelta(minutes=90)),
        ("300ms", timedelta(milliseconds=300)),
        ("1h0m0s", timedelta(hours=1)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30.5)),
        ("+5m", timedelta(minutes=5)),
        (".5h", timedelta(minutes=30)),
        ("1.h", timedelta(hours=1)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        ("1500us", timedelta(microseconds=1500)),
        ("1\u00b5s", timedelta(microseconds=1)),
        ("1\u03bcs", timedelta(microseconds=1)),
        ("2000ns", timedelta(microseconds=2)),
        ("87600h", timedelta(days=3650)),
        ("2562047h", timedelta(hours=2562047)),
    ],
)
def test_parses_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "-1h",
        "-0s",
        "abc",
        "1",
        "1x",
        "h",
        ".h",
        "1..5h",
        "1 h",
        "1h-5m",
        "1d",
        "\u0661h",
        "2562048h",
    ],
)
def test_rejects_malformed_durations_naming_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as caught:
        parse_duration(text)
    assert f'"{text}"' in str(caught.value)


def test_negative_duration_message_says_why() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration("-2160h")


def test_garbage_message_shows_the_expected_form() -> None:
    with pytest.raises(ValueError, match='"2160h"'):
        parse_duration("ninety days")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(days=90), "2160h0m0s"),
        (timedelta(minutes=90), "1h30m0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(milliseconds=300), "300ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=1), "1\u00b5s"),
        (timedelta(0), "0s"),
        (timedelta(hours=1, microseconds=1), "1h0m0.000001s"),
        (-timedelta(hours=1), "-1h0m0s"),
    ],
)
def test_formats_like_go(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=GO_MAX))
def test_format_then_parse_round_trips(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from(["h", "m", "s", "ms", "us"])),
        min_size=1,
        max_size=5,
    )
)
def test_components_add_up(components: list[tuple[int, str]]) -> None:
    units = {
        "h": timedelta(hours=1),
        "m": timedelta(minutes=1),
        "s": timedelta(seconds=1),
        "ms": timedelta(milliseconds=1),
        "us": timedelta(microseconds=1),
    }
    text = "".join(f"{value}{unit}" for value, unit in components)
    assert parse_duration(text) == sum((value * units[unit] for value, unit in components), timedelta(0))
