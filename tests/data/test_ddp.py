"""Two real gloo processes: the samplers read rank and world size from torch.distributed.

fork, not spawn: the children reuse the parent's imports (spawn re-imports torch/transformers: ~30 s).
"""

import json

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from xmod_lab.data.sampling import LanguageBatchSampler, ShardedEvalSampler

LANGS = [0] * 23 + [1] * 11 + [2] * 5


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        result = {}
        for mode in ("mixed", "sorted", "homogeneous"):
            sampler = LanguageBatchSampler(LANGS, 4, mode=mode, seed=3)
            sampler.set_epoch(2)
            result[mode] = list(sampler)
        result["eval"] = list(ShardedEvalSampler(len(LANGS), 4))
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_samplers_under_a_real_process_group(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for mode in ("mixed", "sorted", "homogeneous"):
        assert len(r0[mode]) == len(r1[mode])
        seen0 = {i for b in r0[mode] for i in b}
        seen1 = {i for b in r1[mode] for i in b}
        assert not seen0 & seen1 and seen0 | seen1 == set(range(len(LANGS)))
        # the same plan as an explicit (num_replicas, rank) sampler: the process group was read
        explicit = LanguageBatchSampler(LANGS, 4, mode=mode, seed=3, num_replicas=2, rank=1)
        explicit.set_epoch(2)
        assert r1[mode] == list(explicit)
    assert [i for b in r0["eval"] + r1["eval"] for i in b] == list(range(len(LANGS)))
