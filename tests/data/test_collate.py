import torch

from xmod_lab.data.collate import IGNORE_INDEX, CausalLMCollator, MaskedLMCollator, PadCollator, model_inputs

PAD, MASK, VOCAB = 1, 99, 100
SPECIALS = (0, 1, 2, 3, MASK)


def test_pad_collator_pads_to_longest_and_builds_masks():
    batch = PadCollator(PAD)([
        {"input_ids": [0, 5, 6, 2], "labels": 1, "lang_ids": 2},
        {"input_ids": [0, 7, 2], "labels": 0, "lang_ids": 0},
    ])  # fmt: skip
    assert batch["input_ids"].tolist() == [[0, 5, 6, 2], [0, 7, 2, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert batch["lang_ids"].tolist() == [2, 0]


def test_token_labels_padded_with_ignore_index_and_metadata_kept_out_of_model_inputs():
    batch = PadCollator(PAD, pad_to_multiple_of=8)([
        {"input_ids": [0, 5, 2], "labels": [-100, 4, -100], "lang_ids": 1, "example_id": "a", "offset_mapping": [None, (0, 1), None]},
        {"input_ids": [0, 2], "labels": [-100, -100], "lang_ids": 1, "example_id": "b", "offset_mapping": [None, None]},
    ])  # fmt: skip
    assert batch["input_ids"].shape == (2, 8)
    assert batch["labels"][0].tolist() == [-100, 4] + [IGNORE_INDEX] * 6
    assert batch["example_id"] == ["a", "b"]
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask", "labels", "lang_ids"}


def test_multiple_choice_examples_become_b_c_t():
    batch = PadCollator(PAD)([
        {"input_ids": [[0, 5, 2], [0, 5, 6, 2]], "labels": 1, "lang_ids": 0},
        {"input_ids": [[0, 2], [0, 7, 2]], "labels": 0, "lang_ids": 1},
    ])  # fmt: skip
    assert batch["input_ids"].shape == (2, 2, 4)
    assert batch["attention_mask"][1, 0].tolist() == [1, 1, 0, 0]


def test_mlm_masking_rates_and_never_specials_or_pads():
    g = torch.Generator().manual_seed(0)
    collate = MaskedLMCollator(PAD, MASK, VOCAB, SPECIALS, mlm_probability=0.15, generator=g)
    rows = [
        {"input_ids": [0] + [4 + (i * 7 + j) % 90 for j in range(200 - i)] + [2], "lang_ids": 0}
        for i in range(64)
    ]
    original = PadCollator(PAD)(rows)["input_ids"]
    batch = collate(rows)
    ids, labels = batch["input_ids"], batch["labels"]
    special = torch.isin(original, torch.tensor(SPECIALS))
    targets = labels != IGNORE_INDEX
    assert not (targets & special).any()
    assert torch.equal(ids[special], original[special])  # specials and pads untouched
    assert torch.equal(labels[targets], original[targets])
    rate = targets.sum() / (~special).sum()
    assert 0.13 < rate < 0.17
    masked = (ids == MASK) & targets
    replaced = (ids != MASK) & (ids != original) & targets
    kept = (ids == original) & targets
    n = targets.sum()
    assert 0.76 < masked.sum() / n < 0.84
    assert 0.07 < (replaced.sum() + kept.sum()) / n / 2 < 0.13
    assert not torch.isin(ids[replaced], torch.tensor(SPECIALS)).any()
    assert not torch.equal(collate(rows)["input_ids"], ids)  # a fresh masking every call


def test_clm_labels_are_inputs_with_pads_ignored():
    batch = CausalLMCollator(PAD)(
        [{"input_ids": [0, 5, 6, 2], "lang_ids": 0}, {"input_ids": [0, 5], "lang_ids": 1}]
    )
    assert batch["labels"].tolist() == [[0, 5, 6, 2], [0, 5, IGNORE_INDEX, IGNORE_INDEX]]
