"""Durations as written in policies and annotations, and their shortest exact spelling."""
import pytest

from guywire.model.units import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("2s", 2.0), ("500ms", 0.5), ("5m", 300.0), ("1m30s", 90.0), ("1h", 3600.0), ("0.5s", 0.5),
    ("1.5h", 5400.0), ("1h1m1s", 3661.0), ("250ms", 0.25), ("0s", 0.0), (" 7s ", 7.0), ("1s500ms", 1.5),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_numbers_are_seconds():
    assert parse_duration(3) == 3.0
    assert parse_duration(0.25) == 0.25


@pytest.mark.parametrize("bad", ["", "2", "2 s", "-1s", "1d", "s", "abc", "1.s", "1,5s", "ms", "1sec", "PT5S"])
def test_bad_durations_name_the_value(bad):
    with pytest.raises(ValueError) as err:
        parse_duration(bad)
    assert repr(bad) in str(err.value)
    assert "such as 2s, 500ms or 5m" in str(err.value)


@pytest.mark.parametrize("bad", [None, True, False, [], {}, -1, -0.5])
def test_bad_duration_types(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("seconds, text", [
    (0.5, "500ms"), (2, "2s"), (90, "90s"), (300, "5m"), (3600, "1h"), (5400, "90m"), (0.001, "1ms"),
    (1.5, "1.5s"), (7.25, "7.25s"), (86400, "24h"), (0, "0s"), (-3, "0s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["2s", "500ms", "5m", "1m30s", "1h", "1.5h", "1h1m1s", "250ms", "0.1ms", "1234.567s",
                                  "1.0005s", "0.0004s", "36h"])
def test_format_round_trips(text):
    seconds = parse_duration(text)
    again = format_duration(seconds)
    assert parse_duration(again) == pytest.approx(seconds, abs=1e-9), (text, again)
    assert format_duration(parse_duration(again)) == again, "the spelling is stable"


@pytest.mark.parametrize("value, unit, text, with_unit", [
    (27, "calls", "27", "27 calls"), (1, "hops", "1", "1 hop"), (5.0, "attempts", "5", "5 attempts"),
    (3486784401, "calls", "3486784401", "3486784401 calls"), (2.5, "points", "2.5", "2.5 points"),
    (0.5, "seconds", "500ms", "500ms"), (1200, "seconds", "20m", "20m"), (1, "dependencies", "1", "1 dependency"),
])
def test_figures_render_as_their_unit_writes_them(value, unit, text, with_unit):
    from guywire.model.units import figure_with_unit, render_figure

    assert render_figure(value, unit) == text
    assert figure_with_unit(value, unit) == with_unit


@pytest.mark.parametrize("age, shown", [(61.2, 62), (119.5, 120), (1200, 1200), (1201, 1260), (7200, 7200),
                                        (7201, 10800), (259200, 259200)])
def test_a_report_age_is_rounded_up_to_what_the_message_shows(age, shown):
    from guywire.rules.gpu_nodes import report_age

    assert report_age(age) == shown and shown >= age
