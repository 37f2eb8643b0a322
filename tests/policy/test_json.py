"""The strict JSON reader and typed field access."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sgxlaunch.errors import MalformedInput
from sgxlaunch.policy import _json


def test_loads_strict_accepts_ordinary_documents() -> None:
    assert _json.loads_strict(b'{"a": [1, -2, "x", true, null, {}]}', what="t") == {
        "a": [1, -2, "x", True, None, {}]
    }


@pytest.mark.parametrize(
    "text",
    [
        b'{"a": 1, "a": 1}',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": 1.5}',
        b'{"a": 1e3}',
        b'{"a": ' + b"1" * 21 + b"}",
        b'{"a": -' + b"1" * 21 + b"}",
        b"\xef\xbb\xbf{}",
        b'{"a": "\xff"}',
        b'{"a": "\x01"}',  # control character inside a string
        b"[" * 100_000,
        b"{} x",
        b"",
    ],
)
def test_loads_strict_refuses_every_trap_with_malformed_input(text: bytes) -> None:
    with pytest.raises(MalformedInput):
        _json.loads_strict(text, what="t")


def test_twenty_digit_integers_are_fine() -> None:
    assert _json.loads_strict(b"18446744073709551615", what="t") == (1 << 64) - 1


def test_get_int_refuses_bool_and_out_of_range() -> None:
    doc = {"t": True, "n": 7, "s": "7"}
    with pytest.raises(MalformedInput):
        _json.get_int(doc, "t", "d", low=0, high=10)
    with pytest.raises(MalformedInput):
        _json.get_int(doc, "s", "d", low=0, high=10)
    with pytest.raises(MalformedInput):
        _json.get_int(doc, "n", "d", low=8, high=10)
    assert _json.get_int(doc, "n", "d", low=0, high=10) == 7


def test_time_round_trip_and_strict_forms() -> None:
    when = _json.parse_time("2027-01-31T23:59:59Z", "t")
    assert when == datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC)
    assert _json.format_time(when) == "2027-01-31T23:59:59Z"
    for bad in ("2027-01-31T23:59:60Z", "2027-1-31T00:00:00Z", "2027-01-31t00:00:00z", ""):
        with pytest.raises(MalformedInput):
            _json.parse_time(bad, "t")


def test_dumps_canonical_is_stable() -> None:
    assert _json.dumps_canonical({"b": 1, "a": [2]}) == b'{\n "a": [\n  2\n ],\n "b": 1\n}\n'
