"""ActionMap: numbered latent actions, fitted maps, parsing, validation of action_map.json."""
import json
import os

import pytest

from genie_jax.action_map import FILENAME, ActionMap, default_keys, load_action_map
from genie_jax.data.games import COINRUN_CLASS_NAMES
from genie_jax.errors import UserError


def _coinrun_map(num_actions=6):
    names = tuple(COINRUN_CLASS_NAMES)
    return ActionMap(names=names, latent=(3, 3, 0, 5, 1, 2), keys=default_keys(names),
                     source="fit", num_actions=num_actions, accuracy=0.42,
                     info={"split": "val"})


def test_numbered_latent_actions_without_a_file(tmp_path):
    m = load_action_map(str(tmp_path), 6)
    assert m.source == "latent" and m.accuracy is None
    assert m.names == ("0", "1", "2", "3", "4", "5") and m.latent == (0, 1, 2, 3, 4, 5)
    assert m.keys["ArrowLeft"] == m.keys["a"] == "0" and m.keys["ArrowRight"] == "1"
    assert m.keys["ArrowUp"] == "2" and m.keys["ArrowDown"] == "3" and m.keys[" "] == "4"
    assert {m.keys[str(d)] for d in range(6)} == set(m.names)  # digit d -> latent d
    assert "6" not in m.keys
    assert m.parse("0,3, 5") == [0, 3, 5] and m.name_of(4) == "4"
    with pytest.raises(UserError, match="numbered latent actions, given as comma-separated "
                       "integers 0..5"):
        m.parse("0,RIGHT")
    with pytest.raises(UserError, match=r"ids \[-1\] outside \[0, 6\)"):
        m.parse("-1")


def test_parse_names_case_insensitive_and_raw_ids():
    m = _coinrun_map()
    assert m.parse("RIGHT,RIGHT,UP") == [1, 1, 5]
    assert m.parse("left+up,noop,4") == [3, 0, 4]
    with pytest.raises(UserError, match=r"unknown action 'JUMP'; known: LEFT, LEFT\+UP, NOOP"):
        m.parse("RIGHT,JUMP")
    with pytest.raises(UserError, match=r"ids \[6, 9\] outside \[0, 6\)"):
        m.parse("9,6,UP,6")
    with pytest.raises(UserError, match=r"unknown actions 'JUMP', 'fly'; known"):
        m.parse("JUMP,RIGHT,fly")
    with pytest.raises(UserError, match="no actions given"):
        m.parse(" ")
    with pytest.raises(UserError, match="empty action"):
        m.parse("RIGHT,,UP")


def test_name_of_shared_and_unmapped_latents():
    m = _coinrun_map()
    assert m.name_of(3) == "LEFT/LEFT+UP" and m.name_of(1) == "RIGHT" and m.name_of(4) == "4"


def test_default_keys_for_game_names():
    k = default_keys(COINRUN_CLASS_NAMES)
    assert k["ArrowLeft"] == k["a"] == "LEFT" and k["ArrowRight"] == "RIGHT"
    assert k["ArrowUp"] == "UP" and k["q"] == "LEFT+UP" and k["e"] == "RIGHT+UP"
    assert k["1"] == "LEFT" and k["6"] == "RIGHT+UP"
    ale = ("NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
           "DOWNLEFT", "UPFIRE")
    k = default_keys(ale)
    assert k[" "] == "FIRE" and k["ArrowDown"] == "DOWN" and k["z"] == "DOWNLEFT"
    assert k["0"] == "DOWNLEFT" and "UPFIRE" not in k.values()  # digits for the first ten


def test_save_and_load_roundtrip(tmp_path):
    m = _coinrun_map()
    path = m.save(str(tmp_path))
    assert path == os.path.join(tmp_path, FILENAME)
    assert os.listdir(tmp_path) == [FILENAME]  # no temporary file left behind
    assert load_action_map(str(tmp_path), 6) == m


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("controls"), "controls: missing"),
    (lambda d: d.update(version=2), "version: unsupported 2"),
    (lambda d: d.update(source="guess"), "source: must be one of fit, latent"),
    (lambda d: d.update(num_actions=8), "num_actions: the map is for 8 latent actions but the "
     "run has 6"),
    (lambda d: d["controls"][1].update(latent=6), r"controls\[1\]\.latent: must be an integer "
     r"in \[0, 6\); got 6"),
    (lambda d: d["controls"][2].update(name="left"), r"controls\[2\]\.name: 'left' appears twice"),
    (lambda d: d["controls"][0].update(name="A,B"), r"controls\[0\]\.name: must be a non-empty"),
    (lambda d: d["controls"][0].update(name="4"), r"numeric name must equal its latent id"),
    (lambda d: d["keys"].update(x="JUMP"), r"keys\['x'\]: unknown control 'JUMP'"),
    (lambda d: d.update(accuracy=1.5), "accuracy: must be null or a number in"),
    (lambda d: d.update(controls=[]), "controls: must be a non-empty list"),
])
def test_bad_file_names_file_and_key(tmp_path, edit, match):
    d = _coinrun_map().to_dict()
    edit(d)
    with open(tmp_path / FILENAME, "w") as f:
        json.dump(d, f)
    with pytest.raises(UserError, match=match) as e:
        load_action_map(str(tmp_path), 6)
    assert str(e.value).startswith(str(tmp_path / FILENAME) + ": ")
    assert "\n" not in str(e.value)


def test_file_that_is_not_json(tmp_path):
    (tmp_path / FILENAME).write_text("{oops")
    with pytest.raises(UserError, match=f"{FILENAME}: not valid JSON"):
        load_action_map(str(tmp_path), 6)
