"""Each task module: trains a step, evaluates per language, logs `<stage>/<lang>/<metric>` + `avg`, reloads."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from xmod_lab.tasks import (
    CausalLMTask,
    MaskedLMTask,
    MultipleChoiceTask,
    SequenceClassificationTask,
    TokenClassificationTask,
)
from xmod_lab.tasks.token_classification import SeqevalF1

TINY = {"vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 40, "type_vocab_size": 1}
LANGS = {"adapters": ["en_XX", "de_DE", "fr_XX"], "add": {}, "train": ["en"], "eval": ["en", "de"], "map": {}}
COMMON = {"model": {"pretrained": None, "config": TINY}, "languages": LANGS, "freeze": {"policy": "none"},
          "optimizer": {"lr": 1e-3}, "scheduler": {"name": "linear", "warmup_ratio": 0.1}}
NER = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def batch(kind: str, b: int = 4, t: int = 7, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, TINY["vocab_size"], (b, t), generator=g)
    ids[:, 0] = 0
    out = {"input_ids": ids, "attention_mask": torch.ones(b, t, dtype=torch.long),
           "lang_ids": torch.tensor([0, 1] * (b // 2))}  # en, de, en, de
    if kind == "seq":
        out["labels"] = torch.randint(0, 3, (b,), generator=g)
    elif kind == "token":
        out["labels"] = torch.randint(0, len(NER), (b, t), generator=g)
        out["labels"][:, 0] = -100
    elif kind == "mc":
        out["input_ids"] = ids.unsqueeze(1).repeat(1, 3, 1)
        out["attention_mask"] = torch.ones(b, 3, t, dtype=torch.long)
        out["labels"] = torch.randint(0, 3, (b,), generator=g)
    elif kind == "mlm":
        out["labels"] = torch.full((b, t), -100)
        out["labels"][:, 2:4] = ids[:, 2:4]
    elif kind == "clm":
        out["labels"] = ids.clone()
    return out


CASES = [
    (SequenceClassificationTask, {"num_labels": 3}, "seq", ["acc"]),
    (TokenClassificationTask, {"label_names": NER}, "token", ["acc", "f1"]),
    (MultipleChoiceTask, {}, "mc", ["acc"]),
    (MaskedLMTask, {}, "mlm", ["loss", "ppl"]),
    (CausalLMTask, {}, "clm", ["loss", "ppl"]),
]


def loader(kind, n=2):
    return DataLoader([batch(kind, seed=i) for i in range(n)], batch_size=None)


def trainer(**kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, num_sanity_val_steps=0, **kw)


@pytest.mark.parametrize(("cls", "extra", "kind", "metrics"), CASES, ids=[c[0].__name__ for c in CASES])
def test_task_trains_evaluates_per_language_and_reloads(cls, extra, kind, metrics, tmp_path):
    torch.manual_seed(0)
    task = cls(**COMMON, **extra)
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    tr = trainer(max_steps=2, limit_val_batches=2, default_root_dir=tmp_path)
    tr.fit(task, train_dataloaders=loader(kind), val_dataloaders=[loader(kind)])
    assert any(not torch.equal(before[n], p) for n, p in task.named_parameters()), "no parameter moved"
    logged = tr.callback_metrics
    for lang in ("en_XX", "de_DE", "avg"):
        for m in metrics:
            assert f"val/{lang}/{m}" in logged, sorted(logged)
    for m in metrics:  # avg = unweighted mean of the languages
        mean = (float(logged[f"val/en_XX/{m}"]) + float(logged[f"val/de_DE/{m}"])) / 2
        assert float(logged[f"val/avg/{m}"]) == pytest.approx(mean, rel=1e-5)

    tr.save_checkpoint(tmp_path / "task.ckpt")
    again = cls.load_from_checkpoint(tmp_path / "task.ckpt", weights_only=False)
    assert again.model.config == task.model.config
    for n, p in task.state_dict().items():
        torch.testing.assert_close(again.state_dict()[n], p)
    hp = torch.load(tmp_path / "task.ckpt", weights_only=False)["hyper_parameters"]
    assert _only_plain(hp), "checkpoint hyper-parameters must be plain python values"


def _only_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _only_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_accuracy_is_split_by_the_language_of_each_example():
    torch.manual_seed(0)
    task = SequenceClassificationTask(**COMMON, num_labels=3).eval()
    b = batch("seq", b=8)
    with torch.no_grad():
        pred = task.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], lang_ids=b["lang_ids"]).logits.argmax(-1)
    is_en = b["lang_ids"] == 0
    b["labels"] = torch.where(is_en, pred, (pred + 1) % 3)  # en rows right, de rows wrong
    tr = trainer(max_epochs=1)
    tr.validate(task, dataloaders=[DataLoader([b], batch_size=None)], verbose=False)
    m = tr.callback_metrics
    assert float(m["val/en_XX/acc"]) == 100.0 and float(m["val/de_DE/acc"]) == 0.0
    assert float(m["val/avg/acc"]) == 50.0


def test_language_outside_eval_languages_is_a_clear_error():
    task = SequenceClassificationTask(**COMMON, num_labels=3)
    b = batch("seq")
    b["lang_ids"] = torch.tensor([2, 2, 0, 0])  # fr_XX is not evaluated
    with pytest.raises(ValueError, match=r"language 'fr_XX', which is not in languages.eval"):
        trainer(max_epochs=1).validate(task, dataloaders=[DataLoader([b], batch_size=None)], verbose=False)


def test_eval_language_without_adapter_is_rejected():
    with pytest.raises(ValueError, match=r"languages.eval \['sw_KE'\] have no adapter"):
        SequenceClassificationTask(**{**COMMON, "languages": {**LANGS, "eval": ["en", "sw"]}}, num_labels=3)


def test_freeze_policy_applies_and_nothing_trainable_is_an_error():
    task = SequenceClassificationTask(**{**COMMON, "freeze": {"policy": "paper"}}, num_labels=3)
    frozen = {n for n, p in task.model.named_parameters() if not p.requires_grad}
    assert "roberta.embeddings.word_embeddings.weight" in frozen
    assert "roberta.encoder.layer.0.output.adapter_modules.en_XX.dense1.weight" in frozen
    assert "classifier.out_proj.weight" not in frozen
    assert task.parameter_counts["frozen"] == sum(p.numel() for n, p in task.model.named_parameters() if n in frozen)
    with pytest.raises(ValueError, match="no trainable parameter"):
        SequenceClassificationTask(**{**COMMON, "freeze": {"policy": "custom", "exclude": ["."]}}, num_labels=3)


def test_seqeval_f1_matches_seqeval_on_word_level_tags():
    from seqeval.metrics import f1_score

    metric = SeqevalF1(NER)
    target = torch.tensor([[-100, 1, 2, 0, 3, -100], [-100, 0, 1, 0, 0, -100]])
    preds = torch.tensor([[0, 1, 2, 0, 0, 4], [2, 0, 1, 0, 3, 1]])
    metric.update(preds, target)
    truth = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-PER", "O", "O"]]
    guess = [["B-PER", "I-PER", "O", "O"], ["O", "B-PER", "O", "B-LOC"]]
    assert float(metric.compute()) == pytest.approx(f1_score(truth, guess))
    assert float(metric.compute()) == pytest.approx(2 / 3)


def test_configure_optimizers_uses_config_and_schedule(tmp_path):
    task = SequenceClassificationTask(**{**COMMON, "optimizer": {"lr": 0.5, "betas": [0.8, 0.9], "eps": 1e-5,
                                                                 "weight_decay": 0.1},
                                         "scheduler": {"name": "constant", "warmup_steps": 2}}, num_labels=3)
    tr = trainer(max_steps=1, default_root_dir=tmp_path)
    tr.fit(task, train_dataloaders=loader("seq", n=1))
    opt = tr.optimizers[0]
    assert opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["eps"] == 1e-5
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 1.0)  # after 1 step of a 2-step warmup


class _StubQAData(L.LightningDataModule):
    """Two eval languages; score() records what the task hands over and returns fixed numbers."""

    eval_languages = ["en_XX", "de_DE"]

    def __init__(self):
        super().__init__()
        self.calls = []

    def _batch(self, train: bool) -> dict:
        b = batch("qa", b=4, t=9)
        b["attention_mask"][:, 7:] = 0  # two padding positions
        if train:
            b["start_positions"], b["end_positions"] = torch.tensor([1, 2, 3, 0]), torch.tensor([2, 2, 4, 0])
        else:
            b["lang_ids"] = torch.zeros(4, dtype=torch.long)
            b["example_id"] = ["q1", "q1", "q2", "q3"]  # q1 spans two features
            b["offset_mapping"] = [[[-1, -1]] + [[i, i + 1] for i in range(6)]] * 4
        return b

    def train_dataloader(self):
        return DataLoader([self._batch(True)], batch_size=None)

    def val_dataloader(self):
        return [DataLoader([self._batch(False)], batch_size=None) for _ in self.eval_languages]

    def score(self, split, index, example_ids, offsets, start_logits, end_logits, only_seen=False):
        self.calls.append((split, index, list(example_ids), [len(s) for s in start_logits], only_seen))
        return {"exact_match": 50.0 + index, "f1": 60.0 + index}


def test_question_answering_scores_text_answers_through_the_datamodule(tmp_path):
    from xmod_lab.tasks import QuestionAnsweringTask

    task = QuestionAnsweringTask(**COMMON)
    data = _StubQAData()
    tr = trainer(max_steps=1, default_root_dir=tmp_path)
    tr.fit(task, datamodule=data)
    assert [c[:2] for c in data.calls] == [("validation", 0), ("validation", 1)]
    assert data.calls[0][2] == ["q1", "q1", "q2", "q3"] and data.calls[0][3] == [7, 7, 7, 7]  # padding cut
    assert data.calls[0][4] is False  # one process: every example is scored
    m = tr.callback_metrics
    assert float(m["val/en_XX/f1"]) == 60.0 and float(m["val/de_DE/exact_match"]) == 51.0
    assert float(m["val/avg/f1"]) == 60.5 and task.monitor == "val/avg/f1"


def test_mlm_training_step_uses_masked_logits_only_with_the_full_head_loss(monkeypatch):
    torch.manual_seed(0)
    task = MaskedLMTask(**COMMON).eval()  # no dropout: both forwards see the same network
    b = batch("mlm")
    seen = {}
    forward = task.model.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(task.model, "forward", spy)
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    loss = task.training_step(b, 0)
    assert seen.get("masked_logits_only") is True
    full = forward(input_ids=b["input_ids"], attention_mask=b["attention_mask"], lang_ids=b["lang_ids"],
                   labels=b["labels"]).loss
    torch.testing.assert_close(loss, full)
