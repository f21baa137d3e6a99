"""The fact probe (a cloze test of a language's fact table): its clauses, and the callback that scores it at every
validation of a pre-training run (the learning curve make paper reads)."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from xmod_lab.data.synthetic import fact_clauses, make_language, synthetic_mlm
from xmod_lab.data.synthetic_world import WorldSettings, fact_table
from xmod_lab.tasks import MaskedLMTask
from xmod_lab.tasks.fact_probe import FactProbe

WORLD = WorldSettings(shared_facts=2, private_facts=3, vocab_overlap=1.0, orders=("SOV",))
TINY = {"vocab_size": 1000, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 80, "type_vocab_size": 1}  # fmt: skip


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    root = tmp_path_factory.mktemp("facts")
    return synthetic_mlm(str(root / "synthetic"), ["en_XX", "de_DE"], ["en", "de"], n_train=8, n_eval=8, n_corpus=80,
                         shared_facts=WORLD.shared_facts, private_facts=WORLD.private_facts,
                         vocab_overlap=WORLD.vocab_overlap, orders=WORLD.orders, batch_size=8,
                         cache_dir=str(root / "tok"))  # fmt: skip


def test_each_clause_masks_its_entrys_true_number(datamodule):
    tokenizer = datamodule.tokenizer
    assert datamodule.world == WORLD and datamodule.world_seed == 0  # what the callback reads
    texts, targets = fact_clauses(tokenizer, "de", 0, WORLD)
    table, language = fact_table(WORLD, "de", 0), make_language("de", 0, WORLD)
    assert len(texts) == len(targets) == 5
    for text, target, fact in zip(texts, targets, table, strict=True):
        assert text.split().count(tokenizer.mask_token) == 1
        assert text.replace(tokenizer.mask_token, fact.number).split() == language.clause(fact)
        assert tokenizer.convert_ids_to_tokens(target).lstrip("▁") == fact.number


class _ByWord:
    """A tokenizer that gives each word one id, or numbers two pieces (``cut``): the probe must refuse those."""

    mask_token, mask_token_id = "<mask>", 1

    def __init__(self, cut: bool) -> None:
        self.cut, self.vocab = cut, {}

    def __call__(self, text: str) -> dict:
        ids = []
        for word in text.split():
            if word == self.mask_token:
                ids.append(self.mask_token_id)
            elif word.isdigit() and self.cut:
                ids += [2, self.vocab.setdefault(word, len(self.vocab) + 10)]
            else:
                ids.append(self.vocab.setdefault(word, len(self.vocab) + 10))
        return {"input_ids": ids}


def test_a_number_of_two_tokens_is_refused_not_scored_in_part():
    texts, targets = fact_clauses(_ByWord(cut=False), "en", 0, WORLD)
    assert len(targets) == 5 and len(set(targets)) == len({f.number for f in fact_table(WORLD, "en", 0)})
    with pytest.raises(ValueError, match=r"the number '\d' of the en clause .* is not one token"):
        fact_clauses(_ByWord(cut=True), "en", 0, WORLD)


def test_a_world_without_facts_has_nothing_to_probe():
    with pytest.raises(ValueError, match="no fact table .*world@data: paper"):
        fact_clauses(_ByWord(cut=False), "en", 0, WorldSettings())


def _by_hand(model, tokenizer, lang: str, adapter: str) -> list[float]:
    """One clause at a time, no padding, through the model's default language: not the probe's code path."""
    model.set_default_language(adapter)
    language, losses = make_language(lang, 0, WORLD), []
    for fact in fact_table(WORLD, lang, 0):
        words = language.clause(fact)
        number = tokenizer(" ".join(words))["input_ids"][words.index(fact.number) + 1]  # after <s>
        words[words.index(fact.number)] = tokenizer.mask_token
        ids = torch.tensor([tokenizer(" ".join(words))["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[ids == tokenizer.mask_token_id]
        losses.append(torch.nn.functional.cross_entropy(logits, torch.tensor([number])).item())
    return losses


def test_the_callback_logs_the_probe_of_its_language_with_its_adapter_in_eval_mode(datamodule):
    torch.manual_seed(0)
    task = MaskedLMTask(model={"pretrained": None, "config": {**TINY, "hidden_dropout_prob": 0.5}},
                        languages={"adapters": ["en_XX", "de_DE"], "add": {}, "train": ["en", "de"],
                                   "eval": ["en", "de"], "map": {}},
                        freeze={"policy": "none"}, optimizer={"lr": 1e-3}, scheduler={"name": "linear"})  # fmt: skip
    with torch.no_grad():  # adapters start near the identity: make de's its own, so the adapter shows
        for name, param in task.model.named_parameters():
            if ".de_DE." in name:
                param.add_(torch.randn_like(param))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[FactProbe("de")])  # fmt: skip
    logged = trainer.validate(task, datamodule=datamodule, verbose=False)[0]
    task.model.eval()
    tokenizer = datamodule.tokenizer
    own, other = _by_hand(task.model, tokenizer, "de", "de_DE"), _by_hand(task.model, tokenizer, "de", "en_XX")
    assert logged["val/de/fact_shared"] == pytest.approx(sum(own[:2]) / 2, abs=1e-5)
    assert logged["val/de/fact_private"] == pytest.approx(sum(own[2:]) / 3, abs=1e-5)
    assert abs(sum(other[2:]) / 3 - logged["val/de/fact_private"]) > 1e-2  # the adapter matters: de's was used
    assert "val/en/fact_private" not in logged  # only the language it was given
    # called with the model training (dropout 0.5 on): it scores in eval mode and hands the mode back
    task.model.train()
    seen = {}
    module = SimpleNamespace(model=task.model, log=lambda key, value, **_: seen.update({key: value}))
    FactProbe("de").on_validation_epoch_end(SimpleNamespace(sanity_checking=False, datamodule=datamodule, world_size=1),
                                            module)  # fmt: skip
    assert seen["val/de/fact_private"] == pytest.approx(logged["val/de/fact_private"], abs=1e-5)
    assert task.model.training


def test_the_callback_names_the_data_it_needs_before_any_training(datamodule):
    trainer = SimpleNamespace(sanity_checking=False, datamodule=object())
    with pytest.raises(ValueError, match="callbacks.fact_probe needs synthetic masked-LM text .*data=synthetic_mlm"):
        FactProbe().setup(trainer, SimpleNamespace(), "fit")  # type: ignore[arg-type]
    no_facts = SimpleNamespace(world=WorldSettings(vocab_overlap=1.0), world_seed=0, spec=datamodule.spec)
    with pytest.raises(ValueError, match="world has no fact table .*~callbacks.fact_probe"):
        FactProbe().setup(SimpleNamespace(datamodule=no_facts), SimpleNamespace(), "fit")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="callbacks.fact_probe"):  # a language the model has no adapter for
        FactProbe("fr").setup(SimpleNamespace(datamodule=datamodule), SimpleNamespace(), "fit")  # type: ignore[arg-type]
    FactProbe("de").setup(SimpleNamespace(datamodule=datamodule), SimpleNamespace(), "fit")  # type: ignore[arg-type]
