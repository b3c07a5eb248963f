"""The tokenizer trains through the grain loader on an ArrayRecord dataset directory."""
import json
import os

from tests.conftest import TOKENIZER_CFG, run_cli
from tests.data.helpers import write_tagged


def test_tokenizer_trains_on_arrayrecord_shards(tmp_path):
    data = str(tmp_path / "data")
    write_tagged(data, [16] * 8, hw=16, fractions="0.5,0.5,0")
    wd = str(tmp_path / "run")
    proc = run_cli(["train", f"--config={TOKENIZER_CFG}:size=test", f"--workdir={wd}",
                    "--config.data.source=arrayrecord", f"--config.data.dir={data}",
                    "--config.train.steps=4"])
    assert "done: step 4/4" in proc.stdout
    summary = json.load(open(os.path.join(wd, "summary.json")))
    assert summary["eval"]["psnr"] > 0 and summary["eval"]["code_usage"] > 0


def test_missing_dataset_dir_is_a_one_line_error(tmp_path):
    proc = run_cli(["train", f"--config={TOKENIZER_CFG}:size=test", f"--workdir={tmp_path}/run",
                    "--config.data.source=arrayrecord", f"--config.data.dir={tmp_path}/nope"],
                   check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{tmp_path}/nope" in proc.stderr and "does not exist" in proc.stderr
