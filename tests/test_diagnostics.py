"""Degenerate-run flags per task and metric, on constructed scores and predictions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from xmod_lab import diagnostics
from xmod_lab.diagnostics import LM, SENTENCE, SPANS, TOKEN, flags
from xmod_lab.tasks import SequenceClassificationTask, TokenClassificationTask

PANX = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]


@pytest.mark.parametrize(("row", "predicted", "ceiling", "expected"), [
    ({"acc": 71.0}, {0: 170, 1: 165, 2: 165}, None, []),
    ({"acc": 71.0}, {0: 300, 2: 200}, None, ["predicts 2 of 3 classes"]),
    # 3 predictions of 500 do not make a class used (an exact zero is not needed)
    ({"acc": 40.0}, {0: 297, 1: 3, 2: 200}, None, ["predicts 2 of 3 classes"]),
    ({"acc": 40.0}, {0: 290, 1: 10, 2: 200}, None, []),
    ({"acc": 35.1}, {0: 170, 1: 165, 2: 165}, None, ["within 3 points of chance (33.3)"]),
    ({"acc": 0.0}, {0: 170, 1: 165, 2: 165}, None, ["below chance (33.3)"]),
    ({"acc": 77.0}, {0: 170, 1: 165, 2: 165}, 75.5, ["not above the shortcut ceiling (75.5) by 3 points"]),
    ({"acc": 33.4}, {1: 500}, 33.0, ["predicts 1 of 3 classes", "within 3 points of chance (33.3)",
                                     "not above the shortcut ceiling (33.0) by 3 points"]),
])  # fmt: skip
def test_sentence_classification_flags(row, predicted, ceiling, expected):
    assert flags(SENTENCE, row, num_classes=3, predicted=predicted, ceiling=ceiling) == expected


def test_a_binary_classifier_predicting_one_class_is_flagged():
    assert flags(SENTENCE, {"acc": 57.0}, num_classes=2, predicted={1: 500}) == ["predicts 1 of 2 classes"]


# gold tags of a PAN-X-like set: 80 % O
GOLD = {0: 800, 1: 40, 2: 30, 3: 40, 4: 30, 5: 40, 6: 20}
WORKING = {0: 790, 1: 45, 2: 25, 3: 40, 4: 30, 5: 45, 6: 25}


@pytest.mark.parametrize(("row", "predicted", "expected"), [
    ({"acc": 95.0, "f1": 71.0}, WORKING, []),
    # PAN-X fa: accuracy 0 is below the majority-tag baseline, not "within 3 points of chance (14.3)"
    ({"acc": 0.0, "f1": 0.0}, {3: 1000}, ["predicts 1 of 7 classes", "below the majority-tag baseline (80.0)",
                                          "entity F1 0: no entity found"]),
    # PAN-X id: a fair-looking accuracy with no entity found
    ({"acc": 81.0, "f1": 0.0}, {0: 995, 1: 5}, ["predicts 1 of 7 classes", "within 3 points of the majority-tag "
                                                 "baseline (80.0)", "entity F1 0: no entity found"]),
    ({"acc": 90.0, "f1": 1.5}, WORKING, ["entity F1 below 3"]),
    ({"acc": 92.0}, WORKING, []),  # UD-POS-like: token accuracy only
])  # fmt: skip
def test_token_classification_flags(row, predicted, expected):
    assert flags(TOKEN, row, num_classes=7, predicted=predicted, gold=GOLD) == expected


@pytest.mark.parametrize(("row", "expected"), [
    ({"exact_match": 31.0, "f1": 45.0}, []),
    ({"exact_match": 0.0, "f1": 0.0}, ["exact match below 3", "F1 below 3"]),
    ({"exact_match": 1.0, "f1": 12.0}, ["exact match below 3"]),
])
def test_question_answering_flags(row, expected):
    assert flags(SPANS, row) == expected


@pytest.mark.parametrize(("loss", "expected"), [
    (math.log(1000) - 1.0, []),
    (math.log(1000) - 0.05, ["loss not below a uniform guess (ln 1000 = 6.91) by 0.1"]),
    (math.log(1000) + 2.0, ["loss not below a uniform guess (ln 1000 = 6.91) by 0.1"]),
    (float("nan"), ["loss is not finite"]),
])
def test_language_model_flags(loss, expected):
    assert flags(LM, {"loss": loss, "ppl": math.exp(min(loss, 50)) if loss == loss else loss},
                 vocab_size=1000) == expected


# -- the callback and assess on a real task with constructed predictions ---------------------------------------

TINY = {"vocab_size": 60, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 40, "type_vocab_size": 1}
LANGS = {"adapters": ["en_XX", "de_DE"], "add": {}, "train": ["en"], "eval": ["en", "de"], "map": {}}


def run_test(task, batches, datamodule=None):
    counter = diagnostics.PredictedClasses()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[counter])
    n = task.model.config.num_labels
    # the forward pass, scripted: logits that predict each batch's `predict` ids (the counter reads the test step's)
    task.forward = lambda **batch: SimpleNamespace(logits=torch.nn.functional.one_hot(batch["predict"], n).float())
    trainer.test(task, dataloaders=[DataLoader(b, batch_size=None) for b in batches], verbose=False)
    table = {name: {k.split("/")[2]: float(v) for k, v in trainer.callback_metrics.items()
                    if k.startswith(f"test/{name}/")} for name in task.eval_sets}
    return table, diagnostics.assess(table, trainer, datamodule)


def test_token_task_counts_scored_tokens_and_flags_without_a_shortcut_column():
    task = TokenClassificationTask(model={"pretrained": None, "config": TINY}, languages=LANGS, label_names=PANX)
    labels = torch.tensor([[-100, 0, 0, 1, 2, 0, -100], [-100, 0, 5, 6, 0, 0, -100]])  # 10 scored tags, 6 of them O
    ids = torch.zeros_like(labels)
    working = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
               "predict": labels.clamp(min=0), "lang_ids": torch.tensor([0, 0])}
    all_o = {**working, "predict": torch.zeros_like(labels), "lang_ids": torch.tensor([1, 1])}
    table, diag = run_test(task, [[working], [all_o]])
    assert table["en"] == {"acc": 100.0, "f1": 100.0} and table["de"]["f1"] == 0.0
    assert diag["task"] == TOKEN and diag["predicted_classes"]["de"] == {"0": 10}  # -100 positions not counted
    assert diag["gold_classes"]["en"] == {"0": 6, "1": 1, "2": 1, "5": 1, "6": 1}
    assert diag["baselines"]["de"] == {"acc": 60.0, "f1": 0.0}  # 6 of 10 tags are O
    assert "en" not in diag["flags"]
    assert diag["flags"]["de"] == ["predicts 1 of 7 classes", "within 3 points of the majority-tag baseline (60.0)",
                                   "entity F1 0: no entity found"]
    assert "shortcut_ceiling" not in diag
    text = diagnostics.format_assessment(table, diag)
    assert "shortcut" not in text and "entity F1 0" in text


def test_sentence_task_shows_the_shortcut_column_only_with_a_measured_shortcut():
    task = SequenceClassificationTask(model={"pretrained": None, "config": TINY}, languages=LANGS,
                                      label_names=["entailment", "neutral", "contradiction"])
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = {"input_ids": torch.zeros(6, 4, dtype=torch.long), "attention_mask": torch.ones(6, 4, dtype=torch.long),
             "labels": labels, "predict": labels, "lang_ids": torch.zeros(6, dtype=torch.long)}
    table, diag = run_test(task, [[batch], [{**batch, "lang_ids": torch.ones(6, dtype=torch.long)}]],
                           SimpleNamespace(shortcut_ceiling={"en": 40.0, "de": 99.0}))
    assert diag["chance"] == pytest.approx(33.33) and diag["flags"] == {
        "de": ["not above the shortcut ceiling (99.0) by 3 points"]}
    assert "shortcut" in diagnostics.format_assessment(table, diag)
    _, plain = run_test(task, [[batch], [{**batch, "lang_ids": torch.ones(6, dtype=torch.long)}]])
    assert plain["flags"] == {} and "shortcut" not in diagnostics.format_assessment(table, plain)


def _tiny_batch(kind, lang_id, rows=3, length=5):
    ids = torch.randint(3, TINY["vocab_size"], (rows, length))
    labels = torch.randint(0, len(PANX), (rows, length)) if kind == TOKEN else torch.randint(0, 3, (rows,))
    if kind == TOKEN:
        labels[:, 0] = -100  # an unscored position (a special token)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "lang_ids": torch.full((rows,), lang_id)}


@pytest.mark.parametrize("kind", [SENTENCE, TOKEN])
def test_predicted_classes_are_counted_from_the_test_step_without_a_second_forward_pass(kind):
    torch.manual_seed(0)
    model = {"pretrained": None, "config": TINY}
    task = (TokenClassificationTask(model=model, languages=LANGS, label_names=PANX) if kind == TOKEN else
            SequenceClassificationTask(model=model, languages=LANGS, label_names=["a", "b", "c"]))
    sets = {"en": [_tiny_batch(kind, 0) for _ in range(3)], "de": [_tiny_batch(kind, 1) for _ in range(2)]}
    passes = []
    task.model.register_forward_hook(lambda module, args, out: passes.append(1))
    counter = diagnostics.PredictedClasses()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[counter])
    trainer.test(task, dataloaders=[DataLoader(b, batch_size=None) for b in sets.values()], verbose=False)
    assert len(passes) == 5  # one per test batch

    # what the former second pass counted: the eval-mode model's argmax over the scored positions
    task.eval()
    expected = {}
    with torch.no_grad():
        for name, batches in sets.items():
            slot = expected.setdefault(name, {})
            for b in batches:
                preds = task.model(**{k: v for k, v in b.items() if k != "labels"}).logits.argmax(-1)
                for k in preds[b["labels"] != -100].tolist():
                    slot[k] = slot.get(k, 0) + 1
    assert counter.predicted == expected
    assert sum(counter.predicted["en"].values()) == (3 * 3 * 4 if kind == TOKEN else 3 * 3)
    assert counter.num_classes == {"en": task.model.config.num_labels, "de": task.model.config.num_labels}


def test_a_task_whose_test_step_returns_no_logits_is_not_counted_and_says_so(caplog):
    task = SequenceClassificationTask(model={"pretrained": None, "config": TINY}, languages=LANGS,
                                      label_names=["a", "b", "c"])
    task.test_step = lambda batch, batch_idx, dataloader_idx=0: None
    counter = diagnostics.PredictedClasses()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[counter])
    with caplog.at_level("WARNING", logger="xmod_lab.diagnostics"):
        trainer.test(task, dataloaders=[DataLoader([_tiny_batch(SENTENCE, 0)] * 2, batch_size=None)], verbose=False)
    assert counter.predicted == {}
    assert [r.getMessage() for r in caplog.records if "not counted" in r.getMessage()] == [
        "SequenceClassificationTask's evaluation step returns no {'logits': ...}: predicted classes are not "
        "counted and a classifier predicting one class is not flagged"]
