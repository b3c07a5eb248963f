"""runs.py: meta compatibility (incl. keys added later), params-only restore, unreadable steps."""
import pytest

from genie_jax import runs
from genie_jax.errors import UserError


def test_meta_differences_are_named():
    with pytest.raises(UserError, match="model.width: checkpoint has 32, config has 48"):
        runs.check_compatible({"stage": "tokenizer", "model.width": 32},
                              {"stage": "tokenizer", "model.width": 48}, "here")
    runs.check_compatible({"model.width": 32}, {"model.width": 32}, "here")


def test_a_key_added_later_reads_as_its_old_default(monkeypatch):
    monkeypatch.setitem(runs.META_DEFAULTS, "model.new_option", "old")
    old_ckpt = {"stage": "dynamics", "model.width": 32, "tokenizer.model.width": 16}
    runs.check_compatible(old_ckpt, {**old_ckpt, "model.new_option": "old",
                                     "tokenizer.model.new_option": "old"}, "here")
    with pytest.raises(UserError, match="model.new_option: checkpoint has 'old'"):
        runs.check_compatible(old_ckpt, {**old_ckpt, "model.new_option": "new"}, "here")


def test_keys_that_fix_no_shape_never_refuse_a_checkpoint():
    """remat and the VQ commitment weight: a LAM trained with another commitment loads as a
    frozen LAM (the CPU LAM dropped its commitment loss after the quickstart runs were made)."""
    old = {"stage": "dynamics", "model.width": 32, "lam.model.commitment": 0.25,
           "model.remat": "none"}
    runs.check_compatible(old, {**old, "lam.model.commitment": 0.0, "model.remat": "full"}, "here")
    assert runs.meta_differences(old, {**old, "model.width": 48}) == [("model.width", 32, 48)]


def test_run_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match="config.json does not exist"):
        runs.Run(str(tmp_path)).config()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        runs.Run(str(tmp_path)).config()
    with pytest.raises(UserError, match="no checkpoint under"):
        runs.Run(str(tmp_path), "tokenizer.workdir").restore({})
