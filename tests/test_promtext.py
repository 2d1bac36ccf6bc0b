"""The focused Prometheus text parser: round trips of generated expositions (fresh and through a
parser that remembers its series), the format's edge cases, and one clear error per malformed
line of a wanted family."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovereign_tui.promtext import Parser, PromTextError, Sample, escape_label_value, parse

# --- rendering expositions, as exporters write them ---------------------------------------------

METRIC = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
LABEL = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True)
VALUE = st.floats(allow_nan=True, allow_infinity=True)
LABELS = st.dictionaries(LABEL, st.text(max_size=12), max_size=4)
TIMESTAMP = st.none() | st.integers(-(2**53), 2**53)
SEP = st.sampled_from([" ", "  ", "\t"])


def render_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def render_sample(
    name: str,
    labels: Mapping[str, str],
    value: float,
    ts: int | None = None,
    sep: str = " ",
    braces: bool = False,
) -> str:
    line = name
    if labels or braces:
        line += "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items()) + "}"
    line += sep + render_value(value)
    if ts is not None:
        line += f"{sep}{ts}"
    return line


def comparable(result: Mapping[str, list[Sample]]) -> dict[str, list[tuple[dict[str, str], object]]]:
    """NaN compares unequal to itself: compare it as a marker."""
    return {
        name: [(dict(labels), "NaN" if math.isnan(v) else v) for labels, v in samples]
        for name, samples in result.items()
    }


@st.composite
def expositions(
    draw: st.DrawFn,
) -> tuple[list[str], dict[str, list[tuple[dict[str, str], float]]], list[str]]:
    """Lines of an exposition, the samples of the wanted families it holds, and those families."""
    names = draw(st.lists(METRIC, min_size=1, max_size=5, unique=True))
    wanted = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    lines: list[str] = []
    expected: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in wanted}
    for name in names:
        if draw(st.booleans()):
            lines += [f"# HELP {name} Some {name}.", f"# TYPE {name} gauge"]
        for _ in range(draw(st.integers(0, 4))):
            labels, value = draw(LABELS), draw(VALUE)
            lines.append(render_sample(name, labels, value, draw(TIMESTAMP), draw(SEP), draw(st.booleans())))
            if name in expected:
                expected[name].append((labels, value))
        if draw(st.booleans()):
            lines.append("")
    return lines, expected, wanted


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(expositions())
def test_round_trip(case: tuple[list[str], dict[str, list[tuple[dict[str, str], float]]], list[str]]) -> None:
    lines, expected, wanted = case
    text = "\n".join(lines) + "\n"
    want = comparable(expected)  # type: ignore[arg-type]
    assert comparable(parse(text, wanted)) == want
    # The same text again through a parser that remembers the series: the same answer.
    parser = Parser(wanted)
    assert comparable(parser.parse(text)) == want
    assert comparable(parser.parse(text)) == want


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_remembered_series_with_new_values_parses_like_a_fresh_one(data: st.DataObject) -> None:
    """Scrape after scrape the series stay and the values (and timestamps) change."""
    series = data.draw(st.lists(st.tuples(METRIC, LABELS), min_size=1, max_size=6))
    wanted = {name for name, _ in series}
    parser = Parser(wanted)
    for _ in range(3):
        lines = [
            render_sample(n, lb, data.draw(VALUE), data.draw(TIMESTAMP), data.draw(SEP)) for n, lb in series
        ]
        text = "\n".join(lines)
        assert comparable(parser.parse(text)) == comparable(parse(text, wanted))


# --- the format's edge cases --------------------------------------------------------------------


def test_special_values_timestamps_and_line_endings() -> None:
    text = (
        "# HELP up Whether the target answered.\r\n"
        "up NaN\r\n"
        'up{job="a"} +Inf 1712000000000\r\n'
        'up{job="b"}\t-Inf\r\n'
        'up{job="c"} 1e-3'  # no final newline
    )
    got = parse(text, {"up"})["up"]
    assert math.isnan(got[0][1])
    assert dict(got[0][0]) == {}
    assert got[1:] == [({"job": "a"}, math.inf), ({"job": "b"}, -math.inf), ({"job": "c"}, 0.001)]


def test_escapes_in_label_values_are_undone() -> None:
    raw = 'path\\to "x"\nnext } , = {'
    line = render_sample("m", {"a": raw, "b": "plain"}, 2.0)
    assert "\\\\" in line
    assert '\\"' in line
    assert "\\n" in line
    assert parse(line, {"m"}) == {"m": [({"a": raw, "b": "plain"}, 2.0)]}


def test_loose_but_valid_spacing_and_trailing_comma() -> None:
    text = '  m { a = "1" , b="2", } 3\n\tm{} 4\nm 5'
    assert parse(text, {"m"}) == {"m": [({"a": "1", "b": "2"}, 3.0), ({}, 4.0), ({}, 5.0)]}


def test_only_exact_names_are_returned_and_absent_families_are_empty() -> None:
    text = (
        'DCGM_FI_DEV_FB_USED{gpu="0"} 10\n'
        'DCGM_FI_DEV_FB_USED_PERCENT{gpu="0"} 0.5\n'
        "DCGM_FI_DEV_FB_USED_TOTAL 7\n"
        'DCGM_FI_DEV_FB_USED{gpu="1"} 20\n'
    )
    got = parse(text, ["DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP"])
    assert got == {
        "DCGM_FI_DEV_FB_USED": [({"gpu": "0"}, 10.0), ({"gpu": "1"}, 20.0)],
        "DCGM_FI_DEV_GPU_TEMP": [],
    }
    assert parse(text, []) == {}


def test_samples_with_one_label_set_share_it() -> None:
    labels = 'gpu="0",UUID="GPU-1",Hostname="h"'
    text = f"a{{{labels}}} 1\nb{{{labels}}} 2\n"
    got = Parser(["a", "b"]).parse(text)
    assert got["a"][0][0] is got["b"][0][0]


def test_unwanted_families_are_never_looked_at() -> None:
    text = 'junk{a="unterminated 1\nother not-a-number\nok{a="1"} 2\n'
    assert parse(text, {"ok"}) == {"ok": [({"a": "1"}, 2.0)]}


def test_what_a_parser_remembers_stays_bounded_when_series_churn() -> None:
    parser = Parser({"m"})
    for i in range(500):
        assert parser.parse(f'm{{pod="p{i}"}} {i}\nm{{pod="fixed"}} 1\n')["m"][0] == (
            {"pod": f"p{i}"},
            float(i),
        )
        assert len(parser._series) <= 2 * 2 + 64


def test_an_empty_family_name_is_refused() -> None:
    with pytest.raises(ValueError, match="empty metric name"):
        Parser(["up", ""])


# --- malformed lines of wanted families ---------------------------------------------------------

MALFORMED = [
    ("m", "no value"),
    ('m{a="1"}', "no value"),
    ('m{a="1" 2', "not closed"),
    ("m one", "not a number"),
    ("m 1_000", "not a number"),
    ("m 1 2.5", "not a number"),
    ("m 1 2 3", "expected 'value [timestamp]'"),
    ("m{a=1} 2", "malformed label set"),
    ('m{a="1" b="2"} 2', "malformed label set"),
    ('m{1a="x"} 2', "malformed label set"),
    ('m{a="\\q"} 2', "invalid escape"),
    ('m{a="\\"} 2', "malformed label set"),
    ('m{a="1",a="2"} 3', "duplicate label name"),
    ('m{a="x\\n",a="y"} 3', "duplicate label name"),
    ('m junk{a="1"} 2', "expected '{' or the value"),
]


@pytest.mark.parametrize(("line", "reason"), MALFORMED)
def test_a_malformed_line_of_a_wanted_family_names_its_line(line: str, reason: str) -> None:
    text = f"# HELP m M.\n# TYPE m gauge\nm 1\n{line}\nm 2\n"
    with pytest.raises(PromTextError, match=re.escape(reason)) as caught:
        parse(text, {"m"})
    assert caught.value.lineno == 4
    assert str(caught.value).startswith("line 4: ")
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


def test_a_remembered_series_with_a_bad_value_is_still_an_error() -> None:
    parser = Parser({"m"})
    parser.parse('m{a="1"} 5\n')
    with pytest.raises(PromTextError, match="line 2: value or timestamp is not a number"):
        parser.parse('\nm{a="1"} five\n')
    with pytest.raises(PromTextError, match="not a number"):
        parser.parse('m{a="1"} 1_0\n')
    assert parser.parse('m{a="1"} 6\n') == {"m": [({"a": "1"}, 6.0)]}


def test_a_long_bad_line_is_shortened_in_the_message() -> None:
    line = "m{" + ",".join(f'l{i}="{"v" * 20}"' for i in range(20)) + "} x"
    with pytest.raises(PromTextError) as caught:
        parse(line, {"m"})
    assert len(str(caught.value)) < 200
    assert "..." in str(caught.value)
