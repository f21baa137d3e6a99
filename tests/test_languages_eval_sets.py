"""Evaluation sets that share an adapter are refused rather than averaged into one results row."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from xmod_lab.runs import check_data_languages

BACKBONE = ["en_XX", "de_DE", "ar_AR"]


def test_two_mlqa_pairs_on_one_adapter_are_refused_naming_both():
    config = OmegaConf.create({"train": ["en"], "eval": ["en-ar", "en-de"],
                               "map": {"en-ar": "en_XX", "en-de": "en_XX"}})
    with pytest.raises(ValueError, match=r"en_XX.*en-ar.*en-de"):
        check_data_languages(config, BACKBONE)


def test_distinct_adapters_pass():
    config = OmegaConf.create({"train": ["en"], "eval": ["en", "de", "ar"], "map": None})
    check_data_languages(config, BACKBONE)
