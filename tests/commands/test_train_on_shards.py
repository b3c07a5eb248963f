"""`genie-jax train` on an ArrayRecord dataset directory: a missing one is a one-line error.
(Training on shards in-process: tests/train/test_trainer.py.)"""
from tests.conftest import TOKENIZER_CFG, run_cli


def test_missing_dataset_dir_is_a_one_line_error(tmp_path):
    proc = run_cli(["train", f"--config={TOKENIZER_CFG}:size=test", f"--workdir={tmp_path}/run",
                    "--config.data.source=arrayrecord", f"--config.data.dir={tmp_path}/nope"],
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path}/nope" in proc.stderr and "does not exist" in proc.stderr
