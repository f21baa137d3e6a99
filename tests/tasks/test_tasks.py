"""Each task module: trains a step, evaluates per evaluation set, logs `<stage>/<eval set>/<metric>` + averages, reloads."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from xmod_lab.tasks import (
    CausalLMTask,
    MaskedLMTask,
    MultipleChoiceTask,
    QuestionAnsweringTask,
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
    elif kind == "qa":
        out["start_positions"] = torch.randint(1, t, (b,), generator=g)
        out["end_positions"] = out["start_positions"]
    return out


CASES = [
    (SequenceClassificationTask, {"label_names": ["a", "b", "c"]}, "seq", ["acc"]),
    (TokenClassificationTask, {"label_names": NER}, "token", ["acc", "f1"]),
    (MultipleChoiceTask, {}, "mc", ["acc"]),
    (MaskedLMTask, {}, "mlm", ["loss", "ppl"]),
    (CausalLMTask, {}, "clm", ["loss", "ppl"]),
]


def loader(kind, n=2, seed=0):
    return DataLoader([batch(kind, seed=seed + i) for i in range(n)], batch_size=None)


def trainer(**kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, num_sanity_val_steps=0, **kw)


@pytest.mark.parametrize(("cls", "extra", "kind", "metrics"), CASES, ids=[c[0].__name__ for c in CASES])
def test_task_trains_evaluates_per_eval_set_and_reloads(cls, extra, kind, metrics, tmp_path):
    torch.manual_seed(0)
    task = cls(**COMMON, **extra)
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    tr = trainer(max_steps=2, limit_val_batches=2, default_root_dir=tmp_path)
    tr.fit(task, train_dataloaders=loader(kind), val_dataloaders=[loader(kind), loader(kind, seed=5)])
    assert any(not torch.equal(before[n], p) for n, p in task.named_parameters()), "no parameter moved"
    logged = tr.callback_metrics
    for name in ("en", "de", "avg", "zs_avg"):
        for m in metrics:
            assert f"val/{name}/{m}" in logged, sorted(logged)
    for m in metrics:  # avg = unweighted mean of the sets; zs_avg = the sets that are not training languages
        mean = (float(logged[f"val/en/{m}"]) + float(logged[f"val/de/{m}"])) / 2
        assert float(logged[f"val/avg/{m}"]) == pytest.approx(mean, rel=1e-5)
        assert float(logged[f"val/zs_avg/{m}"]) == pytest.approx(float(logged[f"val/de/{m}"]), rel=1e-5)

    tr.save_checkpoint(tmp_path / "task.ckpt")
    again = cls.load_from_checkpoint(tmp_path / "task.ckpt", weights_only=False)
    assert again.model.config == task.model.config
    for n, p in task.state_dict().items():
        torch.testing.assert_close(again.state_dict()[n], p)
    hp = torch.load(tmp_path / "task.ckpt", weights_only=False)["hyper_parameters"]
    assert _only_plain(hp), "checkpoint hyper-parameters must be plain python values"


class FirstBatchModes(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.eval_modules = [name for name, m in pl_module.named_modules() if not m.training]


@pytest.mark.parametrize(("cls", "extra", "kind"), [
    *[case[:3] for case in CASES], (QuestionAnsweringTask, {}, "qa"),
], ids=[*(c[0].__name__ for c in CASES), "QuestionAnsweringTask"])  # fmt: skip
def test_every_task_fits_in_training_mode_whatever_mode_it_was_in(cls, extra, kind, tmp_path):
    """A loaded model comes in eval mode (from_pretrained, or a user's .eval()); Lightning 2.x keeps it."""
    task = cls(**{**COMMON, **extra, "model": {"pretrained": None, "config": {**TINY, "hidden_dropout_prob": 0.1}}})
    task.eval()
    probe = FirstBatchModes()
    trainer(max_steps=1, limit_val_batches=0, default_root_dir=tmp_path, callbacks=[probe]).fit(
        task, train_dataloaders=loader(kind))
    assert probe.eval_modules == []


def _only_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and _only_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_five_evaluation_sets_on_one_adapter_are_five_rows():
    """MLQA's pairs en-ar ... en-vi all scored with the en_XX adapter: each set keeps its own score (keyed by
    the dataloader that served it, not by the adapter in its lang_ids)."""
    sets = ["en-ar", "en-zh", "en-hi", "en-es", "en-vi"]
    torch.manual_seed(0)
    task = SequenceClassificationTask(**{**COMMON, "languages": {**LANGS, "train": ["en-ar"], "eval": sets}},
                                      label_names=["a", "b", "c"]).eval()
    loaders = []
    for i in range(5):
        b = batch("seq", b=10, seed=i)
        b["lang_ids"] = torch.zeros(10, dtype=torch.long)  # every set on adapter 0 (en_XX)
        with torch.no_grad():
            pred = task.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                              lang_ids=b["lang_ids"]).logits.argmax(-1)
        right = torch.arange(10) < 2 * i  # set i: 2i of 10 right
        b["labels"] = torch.where(right, pred, (pred + 1) % 3)
        loaders.append(DataLoader([b], batch_size=None))
    tr = trainer(max_epochs=1)
    tr.test(task, dataloaders=loaders, verbose=False)
    m = tr.callback_metrics
    assert [float(m[f"test/{name}/acc"]) for name in sets] == pytest.approx([0.0, 20.0, 40.0, 60.0, 80.0])
    assert float(m["test/avg/acc"]) == pytest.approx(40.0) and float(m["test/zs_avg/acc"]) == pytest.approx(50.0)


def test_a_dataloader_without_an_evaluation_set_is_a_clear_error():
    task = SequenceClassificationTask(**COMMON, label_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"evaluation dataloader 2 has no evaluation set: the task evaluates \['en', 'de'\]"):
        trainer(max_epochs=1).validate(task, dataloaders=[loader("seq")] * 3, verbose=False)


def test_evaluation_set_names_are_checked():
    for sets, error in ((["en", "en"], "listed twice"), (["en", "avg"], "name of an average"), (["a/b"], "'/'")):
        with pytest.raises(ValueError, match=error):
            SequenceClassificationTask(**{**COMMON, "languages": {**LANGS, "eval": sets}}, label_names=["a", "b", "c"])


def test_freeze_policy_applies_and_nothing_trainable_is_an_error(tmp_path):
    SequenceClassificationTask(**COMMON, label_names=["a", "b", "c"]).model.save_pretrained(tmp_path / "loaded")
    loaded = {**COMMON, "model": {"pretrained": str(tmp_path / "loaded"), "config": {}}}
    task = SequenceClassificationTask(**{**loaded, "freeze": {"policy": "paper"}}, label_names=["a", "b", "c"])
    frozen = {n for n, p in task.model.named_parameters() if not p.requires_grad}
    assert "roberta.embeddings.word_embeddings.weight" in frozen
    assert "roberta.encoder.layer.0.output.adapter_modules.en_XX.dense1.weight" in frozen
    assert "classifier.out_proj.weight" not in frozen
    assert task.parameter_counts["frozen"] == sum(p.numel() for n, p in task.model.named_parameters() if n in frozen)
    with pytest.raises(ValueError, match="no trainable parameter"):
        SequenceClassificationTask(**{**COMMON, "freeze": {"policy": "custom", "exclude": ["."]}}, label_names=["a", "b", "c"])


@pytest.mark.parametrize("policy", ["paper", "adapters_only", "head_only"])
def test_freezing_embeddings_or_adapters_of_a_model_from_scratch_is_an_error(policy):
    """They would stay random for the whole run (265K of 35M parameters trained, without a word)."""
    with pytest.raises(ValueError, match=rf"freeze policy '{policy}' keeps embeddings.* built from scratch"):
        SequenceClassificationTask(**{**COMMON, "freeze": {"policy": policy}}, label_names=["a", "b", "c"])


def test_freeze_auto_is_paper_after_loading_and_none_from_scratch(tmp_path):
    scratch = SequenceClassificationTask(**{**COMMON, "freeze": {"policy": "auto"}}, label_names=["a", "b", "c"])
    assert scratch.hparams.freeze["policy"] == "none" and scratch.parameter_counts["frozen"] == 0
    scratch.model.save_pretrained(tmp_path / "loaded")
    loaded = {**COMMON, "model": {"pretrained": str(tmp_path / "loaded"), "config": {}}, "freeze": {"policy": "auto"}}
    task = SequenceClassificationTask(**loaded, label_names=["a", "b", "c"])
    assert task.hparams.freeze["policy"] == "paper" and task.parameter_counts["frozen"] > 0


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
                                         "scheduler": {"name": "constant", "warmup_steps": 2}}, label_names=["a", "b", "c"])
    tr = trainer(max_steps=1, default_root_dir=tmp_path)
    tr.fit(task, train_dataloaders=loader("seq", n=1))
    opt = tr.optimizers[0]
    assert opt.defaults["betas"] == (0.8, 0.9) and opt.defaults["eps"] == 1e-5
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 1.0)  # after 1 step of a 2-step warmup
    assert opt.defaults["fused"] is True  # CPU parameters: the fused AdamW kernel


def _qa_eval_batch(context: str, gold: str, language) -> dict:
    b = batch("qa", b=4, t=9)
    b["attention_mask"][:, 7:] = 0  # two padding positions
    b["lang_ids"] = torch.zeros(4, dtype=torch.long)
    b["example_id"] = ["q1", "q1", "q2", "q3"]  # q1 spans two features
    b["offset_mapping"] = [[[-1, -1]] + [[i, i + 1] for i in range(6)]] * 4
    b["context"], b["answers"], b["answer_language"] = [context] * 4, [[gold]] * 4, [language] * 4
    return b


def test_question_answering_scores_text_answers_from_its_batches(tmp_path, monkeypatch):
    """Each evaluation set is scored by the task's own scorer, from what its batches carry; padding never
    holds an answer; the rules follow the batch's answer language."""
    from xmod_lab.tasks import qa_scoring

    task = QuestionAnsweringTask(**COMMON)
    seen = []
    real = qa_scoring.postprocess_predictions

    def spy(contexts, ids, offsets, starts, ends, *args):
        seen.append(([len(s) for s in starts], list(dict.fromkeys(ids))))
        return {i: "a" for i in dict.fromkeys(ids)}  # predict "a" everywhere

    monkeypatch.setattr(qa_scoring, "postprocess_predictions", spy)
    train = batch("qa", b=4, t=9)
    train["start_positions"], train["end_positions"] = torch.tensor([1, 2, 3, 0]), torch.tensor([2, 2, 4, 0])
    # set en: gold "the a" (SQuAD rules drop English articles: exact); set de: gold "der a" under MLQA's German rules
    val = [DataLoader([_qa_eval_batch("abcdef", "the a", None)], batch_size=None),
           DataLoader([_qa_eval_batch("abcdef", "die a", "de")], batch_size=None)]
    tr = trainer(max_steps=1, default_root_dir=tmp_path)
    tr.fit(task, train_dataloaders=DataLoader([train], batch_size=None), val_dataloaders=val)
    assert seen == [([7, 7, 7, 7], ["q1", "q2", "q3"])] * 2
    m = tr.callback_metrics
    assert float(m["val/en/exact_match"]) == 100.0 and float(m["val/de/exact_match"]) == 100.0
    assert real is not spy and task.main_metric == "f1"


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
