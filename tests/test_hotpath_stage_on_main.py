"""Run folders under torchrun (issue 17): rank 0 alone stages and publishes one folder, the
other ranks write into a private folder that is discarded, and an error in staging (the
name exists) stops every rank. Two gloo processes on the CPU, no training."""

from __future__ import annotations

import json
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from alternators_ppl import distributed
from alternators_ppl.runs import RunFolderExistsError, publish_run_folder, stage_run_folder


def _worker(rank: int, world: int, root: str) -> None:
    root = Path(root)
    dist.init_process_group("gloo", init_method=f"file://{root / 'store'}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        report = {}
        final, staging = distributed.stage_on_main(lambda: stage_run_folder(root / "runs", "one"))
        (staging / f"rank{rank}.txt").write_text("x")
        report["final"] = str(distributed.publish_on_main(staging, final, publish_run_folder))
        report["staging"], report["staging_left"] = str(staging), staging.exists()
        try:  # the same name again: rank 0's error reaches every rank
            distributed.stage_on_main(lambda: stage_run_folder(root / "runs", "one"))
            report["second"] = "no error"
        except RunFolderExistsError as error:
            report["second"] = type(error).__name__
        (root / f"report{rank}.json").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_only_rank_0_publishes_one_run_folder(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"report{r}.json").read_text()) for r in (0, 1)]
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["one"]  # no staging left beside it
    assert sorted(p.name for p in (runs / "one").iterdir()) == ["rank0.txt"]
    assert reports[0]["final"] == reports[1]["final"] == str(runs / "one")
    assert not reports[1]["staging"].startswith(str(runs))  # rank 1 never wrote under runs/
    assert not any(r["staging_left"] for r in reports)
    assert [r["second"] for r in reports] == ["RunFolderExistsError"] * 2


def test_one_process_is_unchanged(tmp_path):
    final, staging = distributed.stage_on_main(lambda: stage_run_folder(tmp_path, "solo"))
    assert staging.parent == tmp_path and final == tmp_path / "solo"
    assert distributed.publish_on_main(staging, final, publish_run_folder) == final
    assert final.is_dir() and not staging.exists()
