import pytest

from tests.stages.helpers import save_fake_pipeline


@pytest.fixture(scope="session")
def fake_dyn(tmp_path_factory) -> str:
    """A dynamics run (with its tokenizer and LAM runs) of random params at size=test."""
    return save_fake_pipeline(tmp_path_factory.mktemp("play_runs"))
