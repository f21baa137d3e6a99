import json
import shutil

import pytest
from transformers import AutoTokenizer, XLMRobertaTokenizerFast

from xmod_lab.data.tokenizer import (
    check_vocab_size,
    load_tokenizer,
    save_tokenizer,
    tokenizer_fingerprint,
    tokenizer_record,
    train_tokenizer,
)
from xmod_lab.models import XmodConfig


def test_trained_tokenizer_has_the_xlmr_layout(tokenizer_dir):
    for tok in (
        AutoTokenizer.from_pretrained(str(tokenizer_dir)),
        XLMRobertaTokenizerFast.from_pretrained(str(tokenizer_dir)),
    ):
        assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
        assert tok.mask_token_id == len(tok) - 1
        assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert (tokenizer_dir / "sentencepiece.bpe.model").is_file()
    tok = load_tokenizer(str(tokenizer_dir))
    ids = tok("Anna 7", "Ben 3")["input_ids"]
    # XLM-R pair format: <s> A </s></s> B </s>
    assert ids[0] == 0 and ids[-1] == 2 and tok.convert_ids_to_tokens(ids).count("</s>") == 3
    assert tok.tokenize("Anna 7") == ["▁Anna", "▁7"]
    assert tok("Anna", return_offsets_mapping=True)["offset_mapping"][1] == (0, 4)


def test_train_tokenizer_respects_vocab_size_and_is_deterministic(tmp_path):
    texts = [f"word{i % 97} other{i % 13} x{i}" for i in range(2000)]
    a = train_tokenizer(texts, 64)
    b = train_tokenizer(texts, 64)
    assert len(a) <= 64
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


def test_check_vocab_size(tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    check_vocab_size(tok, len(tok))
    with pytest.raises(ValueError, match=f"has {len(tok)} tokens but the model's vocab_size is 10"):
        check_vocab_size(tok, 10)


def test_missing_local_tokenizer_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tokenizer"):
        load_tokenizer(str(tmp_path / "nope"))


def test_an_export_with_a_float_reduction_factor_loads_its_tokenizer(tokenizer_dir, tmp_path):
    """transformers' XmodConfig takes an int adapter_reduction_factor only; an xmod-lab export with a float one
    (bottleneck wider than the hidden size: the paper study's) must still give its tokenizer back."""
    export = tmp_path / "export"
    shutil.copytree(tokenizer_dir, export)
    XmodConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               adapter_reduction_factor=0.25, languages=["en_XX"]).save_pretrained(export)  # fmt: skip
    with pytest.raises(Exception, match="adapter_reduction_factor"):
        AutoTokenizer.from_pretrained(str(export))  # what the plain call does: the defect this guards against
    tok = load_tokenizer(str(export))
    assert tok.tokenize("Anna 7") == ["▁Anna", "▁7"] and tok.mask_token_id == len(tok) - 1
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(load_tokenizer(str(tokenizer_dir)))


def test_saved_and_loaded_tokenizers_carry_no_call_time_padding(tokenizer_dir, tmp_path):
    """A `padding=True` call leaves padding on in transformers 5's backend and save_pretrained writes it: our saves
    (exports, checkpoint records) drop it, and a directory that has it loads without it."""
    tok = load_tokenizer(str(tokenizer_dir))
    tok(["Anna", "Anna Ben Paris"], padding=True, truncation=True, max_length=3)
    tok.save_pretrained(str(tmp_path / "plain"))  # what transformers writes
    assert json.loads((tmp_path / "plain" / "tokenizer.json").read_text())["padding"] is not None
    loaded = load_tokenizer(str(tmp_path / "plain"))
    assert loaded.backend_tokenizer.padding is None and loaded.backend_tokenizer.truncation is None
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
    tok(["Anna", "Anna Ben Paris"], padding=True)
    save_tokenizer(tok, tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
    tok(["Anna", "Anna Ben Paris"], padding=True)
    record = json.loads(tokenizer_record(tok)["files"]["tokenizer.json"])
    assert record["padding"] is None
