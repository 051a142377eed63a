"""Scenario settings: parsing, layering and validation."""

import pytest

from loadtest import config
from loadtest.config import ConfigError


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("45", 45.0),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (1.5, 1.5),
    ],
)
def test_durations(text, seconds):
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "soon", "5x", "-3s", "1m-"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        config.parse_duration(bad)


def test_ranges_and_weights():
    assert config.parse_int_range("3") == (3, 3)
    assert config.parse_int_range("2-6") == (2, 6)
    assert config.parse_duration_range("500ms-2s") == (0.5, 2.0)
    assert config.parse_weights("us:3,uk") == {"us": 3.0, "uk": 1.0}
    assert config.parse_weights(["a", "b"]) == {"a": 1.0, "b": 1.0}
    assert config.parse_mapping("uk=http://127.0.0.1:1,us=http://x") == {"uk": "http://127.0.0.1:1", "us": "http://x"}
    assert config.parse_json_object('{"tier": "gold", "n": 1}') == {"tier": "gold", "n": 1}
    with pytest.raises(ValueError):
        config.parse_int_range("6-2")
    with pytest.raises(ValueError):
        config.parse_weights("us:0")


def test_layering_defaults_file_env_flags(tmp_path):
    file_values = config.load_file(_toml(tmp_path, 'users = 5\nturns = "4"\nregions = ["uk", "eu"]\n'))
    env = {"LOADTEST_USERS": "7", "LOADTEST_THINK_TIME": "2s"}
    s = config.resolve(file_values, {"users": "9"}, environ=env)
    assert s.users == 9 and s.sources["users"] == "flag"
    assert s.think_time == (2.0, 2.0) and s.sources["think_time"] == "env"
    assert s.turns == (4, 4) and s.sources["turns"] == "file"
    assert list(s.regions) == ["uk", "eu"]
    assert s.duration == 45.0 and s.sources["duration"] == "default"


def test_unknown_key_in_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'userz'"):
        config.load_file(_toml(tmp_path, "userz = 5\n"))


def test_wrong_type_names_the_setting_and_source(tmp_path):
    with pytest.raises(ConfigError, match="key 'users' in the scenario file"):
        config.resolve({"users": "many"}, environ={})
    with pytest.raises(ConfigError, match="LOADTEST_TURNS"):
        config.resolve(environ={"LOADTEST_TURNS": "lots"})


def test_unknown_region_is_rejected():
    with pytest.raises(ConfigError, match="unknown region.*mars.*known: us, uk, eu, self-serve"):
        config.resolve(flags={"regions": "uk,mars"}, environ={})


def test_bad_base_url_is_rejected():
    with pytest.raises(ConfigError, match="not an http"):
        config.resolve(flags={"base_urls": "uk=ftp://x"}, environ={})


def _toml(tmp_path, text):
    p = tmp_path / "loadtest.toml"
    p.write_text(text)
    return p


def test_scenario_attributes_are_the_settings_table_typed():
    """Scenario declares one typed attribute per setting (generated: `python -m loadtest.config`),
    in the table's order, and every resolved value has its declared type."""
    import typing

    hints = typing.get_type_hints(config.Scenario)
    declared = [name for name in config.Scenario.__annotations__ if name not in ("values", "sources", "notes")]
    assert declared == [s.name for s in config.SETTINGS], "regenerate with `python -m loadtest.config`"
    scenario = config.resolve(flags={"arrival_rate": "us:2", "regions": "us", "slos": ["p95 < 1s"], "arrival_steps": "step=1,every=5s,max=4"}, environ={})
    for s in config.SETTINGS:
        hint = hints[s.name]
        kind = typing.get_origin(hint) or hint
        value = getattr(scenario, s.name)
        assert isinstance(value, kind), f"{s.name} = {value!r} is not {hint}"
        if kind is tuple:
            args = typing.get_args(hint)
            assert all(isinstance(v, a) for v, a in zip(value, args)), f"{s.name} = {value!r} is not {hint}"
    assert config.fields_source() in (config.Path(config.__file__).read_text())
