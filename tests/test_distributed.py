"""Scale-out: training and annotation under torchrun (2 CPU processes, gloo) equal one process.

One ``torchrun --standalone --nproc_per_node 2`` job runs the worker below (training, then
``wsslib annotate``); the test runs the same functions in its own process for the reference.

* Training: the same global batches (batch 8 = 2 x 4), sync batch norm, flips drawn for the
  global batch, head dropout 0 (dropout masks are drawn per process). Compared: every tensor of
  the final state_dict (weights and batch-norm statistics) within 1e-4 while training moved
  them by far more, and the per-epoch validation losses.
* Annotation: the batches are shared between the processes and rank 0 merges the records; every
  output file (masks, CSV, review list, COCO JSON, journal) must be byte-identical. A second run
  gives rank 1 another output folder, as on machines without a shared file system: rank 0 must
  fetch rank 1's records (and rebuild its masks from their RLE) and still write identical files.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsslib.core import distributed as wdist
from wsslib.models import create_model, save_checkpoint

WORKER = textwrap.dedent('''
    """Worker run by torchrun (and imported by the test for the one-process reference)."""
    import sys
    from pathlib import Path

    import torch

    from wsslib.core import distributed as wdist
    from wsslib.apps.annotate import AnnotateSettings, annotate
    from wsslib.models import create_model
    from wsslib.data.base import TensorBatch
    from wsslib.models.training import ClassifierTrainConfig, train_classifier


    def data():
        g = torch.Generator().manual_seed(0)
        x = torch.rand(32, 3, 32, 32, generator=g)
        y = torch.arange(32) % 2
        x[y == 1, 0] = (x[y == 1, 0] + 0.4).clamp(0, 1)  # class 1: redder
        xv = torch.rand(16, 3, 32, 32, generator=g)
        yv = torch.arange(16) % 2
        xv[yv == 1, 0] = (xv[yv == 1, 0] + 0.4).clamp(0, 1)
        return TensorBatch(x, y), TensorBatch(xv, yv)


    def train_once(out):
        torch.manual_seed(1)
        model = create_model("smallcnn", dropout=0.0, width=8)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        res = train_classifier(model, *data(), ClassifierTrainConfig(lr=3e-3, batch_size=8, epochs=3, patience=None, seed=5),
                               progress=False, device="cpu")
        if wdist.is_main_process():
            torch.save({"init": init, "state": model.state_dict(), "history": res.history,
                        "best": res.best_epoch, "world": wdist.dist_info().world_size,
                        "modules": sorted({type(m).__name__ for m in model.modules()})}, out)


    def annotate_once(images, ckpts, out):
        return annotate(images, ckpts, out, AnnotateSettings(theta=1.0, k=6), batch_size=2, device="cpu",
                        progress=False)


    if __name__ == "__main__":
        train_once(sys.argv[1])
        annotate_once(sys.argv[2], sys.argv[4:], sys.argv[3])
        # as if OUT_DIR were on each machine's own disk: rank 1 writes elsewhere, rank 0 must fetch
        rank = wdist.dist_info().rank
        annotate_once(sys.argv[2], sys.argv[4:], sys.argv[3] + ("_unshared" if rank == 0 else "_rank1_disk"))
''')


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Inputs, the torchrun job's outputs and the one-process reference."""
    tmp = tmp_path_factory.mktemp("dist")
    (tmp / "worker.py").write_text(WORKER)
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (24 + 4 * i, 30, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    Image.fromarray(rng.integers(0, 65536, (20, 22), dtype=np.uint16)).save(images / "grey16.tif")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    ckpts = []
    for i in range(3):
        torch.manual_seed(20 + i)
        m = create_model("smallcnn", dropout=0.5, width=8)
        with torch.no_grad():
            m.fc.weight[0].zero_()
            m.fc.weight[1].abs_().mul_(0.1)
            m.fc.bias.copy_(torch.tensor([0.0, 1.0 - 0.5 * i]))
        ckpts.append(str(save_checkpoint(m, tmp / f"m{i}.pt", image_size=32, map_threshold=0.3)))

    env = dict(os.environ, OMP_NUM_THREADS="1", WSSLIB_DIST_BACKEND="gloo")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tmp / "worker.py"), str(tmp / "two.pt"), str(images), str(tmp / "out_two"), *ckpts]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    spec = importlib.util.spec_from_file_location("wsslib_dist_worker", tmp / "worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.train_once(tmp / "one.pt")
    res = worker.annotate_once(images, ckpts, tmp / "out_one")
    return {"tmp": tmp, "res_one": res}


def test_training_ddp_equals_one_process(job):
    one = torch.load(job["tmp"] / "one.pt", weights_only=False)
    two = torch.load(job["tmp"] / "two.pt", weights_only=False)
    assert (one["world"], two["world"]) == (1, 2)
    assert one["modules"] == two["modules"] and "BatchNorm2d" in two["modules"]  # sync BN reverted
    assert set(one["state"]) == set(two["state"])
    moved = max((one["state"][k].double() - one["init"][k].double()).abs().max().item() for k in one["state"])
    diff = max((one["state"][k].double() - two["state"][k].double()).abs().max().item() for k in one["state"])
    assert moved > 1e-2, "training did not change the weights: nothing compared"
    assert diff < 1e-4, f"2-process DDP weights differ from 1 process by {diff}"
    assert one["best"] == two["best"]
    for a, b in zip(one["history"], two["history"]):
        assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-4, abs=1e-5)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-5)


def test_annotate_two_processes_identical_outputs(job):
    one, two = _tree(job["tmp"] / "out_one"), _tree(job["tmp"] / "out_two")
    assert sorted(one) == sorted(two)
    assert [k for k in one if one[k] != two[k]] == []
    res = job["res_one"]
    assert res.counts["errors"] == 1 and res.n_images == 7
    assert any(k.startswith("masks/") for k in one)
    unshared, rank1_disk = _tree(job["tmp"] / "out_two_unshared"), _tree(job["tmp"] / "out_two_rank1_disk")
    assert unshared == one
    assert rank1_disk and all(k.startswith(("journal/", "masks/")) for k in rank1_disk)  # rank 1 did its share there


def test_helpers_without_torchrun():
    assert wdist.dist_info() == wdist.DistInfo() and wdist.is_main_process() and not wdist.is_distributed()
    assert wdist.init_distributed().world_size == 1
    assert wdist.broadcast_object({"a": 1}) == {"a": 1} and wdist.gather_objects(3) == [3]
    assert wdist.shard(list(range(7)), 0, 2) == [0, 2, 4, 6] and wdist.shard(list(range(7)), 1, 2) == [1, 3, 5]
    with pytest.raises(ValueError):
        wdist.shard([1], 2, 2)


def test_sync_batchnorm_round_trip_single_process():
    """Converted and reverted, a model keeps its parameter objects; alone, CPUSyncBatchNorm is batch norm."""
    torch.manual_seed(0)
    m = create_model("smallcnn", width=8, dropout=0.0)
    params = [id(p) for p in m.parameters()]
    target = m.target_layer
    x = torch.rand(4, 3, 32, 32)
    wdist.convert_sync_batchnorm(m, "cpu")
    assert any(isinstance(mod, wdist.CPUSyncBatchNorm) for mod in m.modules())
    assert [id(p) for p in m.parameters()] == params and m.target_layer is target
    torch.manual_seed(0)
    m2 = create_model("smallcnn", width=8, dropout=0.0).train()
    torch.testing.assert_close(m.train()(x), m2(x))
    wdist.revert_sync_batchnorm(m)
    assert not any(isinstance(mod, wdist.CPUSyncBatchNorm) for mod in m.modules())
    assert any(type(mod) is torch.nn.BatchNorm2d for mod in m.modules())
    assert [id(p) for p in m.parameters()] == params
