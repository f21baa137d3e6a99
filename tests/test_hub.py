"""The hub out of reach: one error naming the model, tokenizer or dataset, whatever library raised it."""

from __future__ import annotations

import datasets
import pytest

from xmod_lab import hub
from xmod_lab.data import sources

# What transformers, huggingface_hub and datasets raise for "not cached, no network" (their own words)
TRANSFORMERS = OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in "
                       "the cached files.")
DATASETS = ConnectionError("Couldn't reach 'facebook/xnli' on the Hub (OfflineModeIsEnabled)")


class LocalEntryNotFoundError(FileNotFoundError):  # huggingface_hub's, by name (raised bare by hf_hub_download)
    pass


@pytest.mark.parametrize("err", [TRANSFORMERS, DATASETS, LocalEntryNotFoundError("Cannot find the requested files")])
def test_unreachable_hub_becomes_one_error_naming_what_is_missing(err, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as raised, hub.reaching("model", "facebook/xmod-base", "model.pretrained"):
        raise err
    message = str(raised.value)
    assert "model 'facebook/xmod-base' is not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "model.pretrained=<a local copy>" in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


@pytest.mark.parametrize("err", [OSError("facebook/xmod-base does not appear to have a file named config.json"),
                                 ValueError("not a valid checkpoint")])
def test_other_hub_errors_pass_through_unchanged(err):
    with pytest.raises(type(err)) as raised, hub.reaching("model", "facebook/xmod-base", "model.pretrained"):
        raise err
    assert raised.value is err


def test_hub_dataset_out_of_reach_names_the_dataset_and_its_config(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise DATASETS

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(OSError, match=r"dataset 'facebook/xnli' \(config 'sw'\) is not in the local Hugging Face"):
        sources.load_split({"path": "facebook/xnli", "name": "{lang}"}, "sw", "test")
