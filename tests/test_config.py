"""Configs from plain dicts: types checked, unknown keys and bad values named by their dotted key."""
import pytest

from hdc_lib.config import ConfigError, from_dict, to_dict
from hdc_lib.hdc import HDCConfig


def test_round_trip_through_a_plain_dict():
    cfg = from_dict(HDCConfig, {"levels": ["layer4"], "augment": {"size": 48}, "temperature": 1})
    assert cfg.levels == ("layer4",) and cfg.augment.size == 48 and cfg.temperature == 1.0
    assert from_dict(HDCConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("data, message", [
    ({"levles": ["layer4"]}, "unknown key 'levles'"),
    ({"augment": {"sise": 3}}, "unknown key 'augment.sise'"),
    ({"temperature": "hot"}, "temperature: expected float"),
    ({"queue_size": 2.5}, "queue_size: expected int"),
    ({"weighting": "magic"}, "weighting: 'magic' is not one of"),
    ({"temperature": -1.0}, "temperature must be > 0"),
    ({"levels": "layer4"}, "levels: expected a list"),
])
def test_bad_values_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(HDCConfig, data)


def test_a_partial_nested_section_refines_the_fields_default():
    base = HDCConfig().augment
    cfg = from_dict(HDCConfig, {"augment": {"size": 48}})
    assert cfg.augment.size == 48
    assert (cfg.augment.flip_p, cfg.augment.scale) == (base.flip_p, base.scale)
