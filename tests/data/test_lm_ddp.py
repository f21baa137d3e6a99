"""Two real gloo processes share one LM cache (one builds, the other waits and reads) and split every
alpha-sampled global step into distinct blocks whose union has the configured language mix.

fork, not spawn: the children reuse the parent's imports (see tests/data/test_ddp.py)."""

import json

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.data.sampling import apportion, language_sampling_probs


def _worker(rank: int, init_file: str, root: str, tokenizer: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        dm = LanguageModelingDataModule(
            source={"path": root + "/{lang}.txt", "splits": {"validation": None, "test": None}}, tokenizer=tokenizer,
            languages=["en_XX", "ru_RU"], train_langs=["en", "ru"], max_length=16, alpha=0.3, batch_size=3,
            cache_dir=root + "/cache", num_proc=1, batch_lines=50,
        )  # fmt: skip
        built = [dm.blocks(lang, "train").built for lang in ("en", "ru")]  # both ranks at once, no barrier
        dm.setup("fit")
        loader = dm.train_dataloader()
        sampler = loader.batch_sampler
        sampler.set_epoch(1)
        batches = list(sampler)
        langs = [b["lang_ids"].tolist() for b in loader]
        out = {"built": built, "batches": batches, "langs": langs,
               "example_langs": sampler.example_langs.tolist()}  # fmt: skip
        with open(f"{root}/rank{rank}.json", "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_share_the_cache_and_sample_the_configured_mix(tmp_path, tokenizer_dir):
    for lang, n in (("en", 400), ("ru", 40)):
        (tmp_path / f"{lang}.txt").write_text("".join(f"Anna {i % 9} Ben {lang} {i}\n" for i in range(n)))
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path), str(tokenizer_dir)), nprocs=2,
                       start_method="fork")  # fmt: skip
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    # each language built by exactly one rank, read from the cache by the other
    assert [sorted(pair) for pair in zip(r0["built"], r1["built"], strict=True)] == [[False, True], [False, True]]
    assert len(list((tmp_path / "cache").glob("lm-*"))) == 2
    assert len(r0["batches"]) == len(r1["batches"])  # same number of steps: no DDP hang
    example_langs = np.array(r0["example_langs"])
    step_union = []
    for a, b in zip(r0["batches"], r1["batches"], strict=True):
        if len(set(a) | set(b)) >= 2:  # (a last step with one block left gives both ranks that block)
            assert not set(a) & set(b) and len(set(a)) == len(a)  # distinct blocks in every step
        step_union += sorted(set(a) | set(b))
    sizes = np.bincount(example_langs)
    expected = apportion(int(sizes.sum()), language_sampling_probs(sizes, 0.3))
    assert np.bincount(example_langs[step_union], minlength=2).tolist() == expected.tolist()
    assert expected[1] > sizes[1]  # ru is up-sampled, en down-sampled: no en block twice
    en = [i for i in step_union if example_langs[i] == 0]
    assert len(en) == len(set(en))
    # the loader yields what the sampler planned (the same language ids, in order)
    assert [lang for b in r0["langs"] for lang in b] == [int(example_langs[i]) for b in r0["batches"] for i in b]
