"""A pre-training run resumed from a mid-epoch checkpoint sees exactly the blocks an uninterrupted run sees."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from tests.data.conftest import MODEL_LANGUAGES
from xmod_lab.data.language_modeling import LanguageModelingDataModule


class Recorder(L.LightningModule):
    """Trains one weight and records every training batch (CLM: the inputs are the blocks themselves)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, tuple(map(tuple, batch["input_ids"].tolist())),
                          tuple(batch["lang_ids"].tolist())))  # fmt: skip
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def datamodule(synthetic_root, tokenizer_dir, cache, num_workers):
    return LanguageModelingDataModule(
        source={"path": str(synthetic_root / "corpus" / "{lang}.txt")}, tokenizer=str(tokenizer_dir),
        languages=MODEL_LANGUAGES, train_langs=["en", "ru"], eval_langs=["en"], objective="clm", max_length=24,
        holdout=0.1, alpha=0.5, batch_size=5, cache_dir=str(cache), num_workers=num_workers, num_proc=1, seed=7,
    )  # fmt: skip


def fit(dm, root, ckpt_path=None, logger=False):
    model = Recorder()
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", filename="{step}", every_n_train_steps=1, save_top_k=-1)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=logger, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[checkpoints],
                        default_root_dir=root)  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model.seen, trainer


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_sees_the_same_blocks(tmp_path, synthetic_root, tokenizer_dir, num_workers):
    cache = tmp_path / "cache"
    whole, trainer = fit(datamodule(synthetic_root, tokenizer_dir, cache, num_workers), tmp_path / "a",
                         logger=CSVLogger(tmp_path / "a", name="csv"))  # fmt: skip
    per_epoch = trainer.num_training_batches
    assert len(whole) == 2 * per_epoch > 8 and whole[:per_epoch] != whole[per_epoch:]
    # killed after step k (checkpoint written at k): in epoch 0, at its very end, and in epoch 1
    for k in (3, per_epoch, per_epoch + 2):
        resumed, _ = fit(datamodule(synthetic_root, tokenizer_dir, cache, num_workers), tmp_path / f"r{k}",
                         ckpt_path=tmp_path / "a" / "ckpt" / f"step={k}.ckpt")  # fmt: skip
        assert resumed == whole[k:], f"resumed after step {k}"
    # the realised language mix of each epoch went to the loggers
    rows = list(csv.DictReader(open(next((tmp_path / "a" / "csv").glob("*/metrics.csv")))))
    mix = [(float(r["data/mix/en_XX"]), float(r["data/mix/ru_RU"])) for r in rows if r.get("data/mix/en_XX")]
    assert len(mix) == 2 and all(abs(a + b - 1) < 1e-6 for a, b in mix)
    langs = [lang for _, _, ids in whole[:per_epoch] for lang in ids]
    assert mix[0][0] == pytest.approx(langs.count(0) / len(langs))


def test_global_batch_in_tokens_sets_the_accumulation(tmp_path, synthetic_root, tokenizer_dir):
    dm = datamodule(synthetic_root, tokenizer_dir, tmp_path / "cache", 0)
    dm.global_batch_tokens = 5 * 24 * 2 * 3  # batch 5, blocks of 24, 2 processes, 3 steps
    assert dm.accumulation(world_size=2) == 3
    with pytest.raises(ValueError, match="not a multiple of data.batch_size"):
        dm.accumulation(world_size=4)
    with pytest.raises(ValueError, match="accumulate_grad_batches=2 contradicts"):
        dm.accumulation(world_size=2, configured=2)
    dm.global_batch_tokens = 5 * 24 * 4
    model = Recorder()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, enable_checkpointing=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert trainer.accumulate_grad_batches == 4 and len(model.seen) == 8  # 2 optimizer steps of 4 batches
