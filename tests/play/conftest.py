import pytest

from tests.stages.helpers import save_fake_pipeline


@pytest.fixture(scope="session")
def fake_dyn(tmp_path_factory) -> str:
    """A dynamics run (with its tokenizer and LAM runs) of random params at size=test."""
    return save_fake_pipeline(tmp_path_factory.mktemp("play_runs"))


@pytest.fixture(scope="session")
def greedy_engine(fake_dyn):
    """The shared PlayEngine of the fake run, greedy sampling (a frame depends only on the state
    and the action), compiled once for the whole session."""
    from genie_jax.action_map import load_action_map
    from genie_jax.evaluation import load_world_model
    from genie_jax.play.session import PlayEngine
    wm = load_world_model(fake_dyn, temperature=0.0)
    return PlayEngine(wm, load_action_map(fake_dyn, int(wm.dynamics.num_actions)))


@pytest.fixture(scope="session")
def clips(greedy_engine):
    from genie_jax.play.prompts import HeldOutClips
    return HeldOutClips(greedy_engine.wm.config, "test", 1)
