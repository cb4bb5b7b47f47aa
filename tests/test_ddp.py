"""Two CPU processes under torchrun (gloo): the same script trains, ranks stay in sync, the
contrastive loss is the loss over the global batch, and shuffle BN's groups span the ranks."""
import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_ddp_worker.py")


def test_two_process_training_stays_in_sync_over_the_global_batch(tiny_overrides, tmp_path):
    result = tmp_path / "ddp.json"
    overrides = [o for o in tiny_overrides if not o.startswith("train.epochs")] + ["train.epochs=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(WORKER), "configs/toy/coupled.yaml", str(result), *overrides],
        capture_output=True, text=True, timeout=240, env=env, cwd=Path(__file__).resolve().parents[1])
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "broadcast_buffers" not in completed.stderr  # no deprecated DDP argument (a FutureWarning)
    assert "FutureWarning" not in completed.stderr  # e.g. torch.distributed.nn's all_gather, deprecated
    findings = json.loads(result.read_text())
    assert findings == {"in_sync": True, "grad_match": True, "key_columns": 8, "shuffle_bn_match": True,
                        "world": 2}
    assert (tmp_path / "run" / "final.pt").exists()
