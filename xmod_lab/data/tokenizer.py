"""The XLM-R sentencepiece tokenizer (what every X-MOD checkpoint uses), and a small one trained from text.

A trained tokenizer has XLM-R's layout, so all code treats both alike: ``<s>``=0, ``<pad>``=1, ``</s>``=2,
``<unk>``=3, then the sentencepiece pieces in their model order (fairseq's +1 offset), ``<mask>`` last.
The saved directory loads with ``AutoTokenizer.from_pretrained`` / ``XLMRobertaTokenizerFast.from_pretrained``
and also holds the ``sentencepiece.bpe.model`` file XLM-R ships.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, XLMRobertaTokenizer

from xmod_lab import hub

log = logging.getLogger(__name__)

XLMR_TOKENIZER = "FacebookAI/xlm-roberta-base"
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# What a tokenizer directory or a checkpoint's tokenizer record may hold: vocabularies, merges, sentencepiece
# models and JSON settings. Code (.py, or an `auto_map` naming a class to import) is refused, never prompted for.
TOKENIZER_SUFFIXES = (".json", ".model", ".txt", ".jinja")
# Files of a model directory that name code for transformers to import (`auto_map`)
CODE_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")


def remote_code_refusal(names: Iterable[str], read: Callable[[str], bytes], label: Callable[[str], str]) -> str | None:
    """Why the files ``names`` would run code if transformers loaded them, or None. ``read(name)``: a file's
    bytes; ``label(name)``: how the message names it (a path, or a file inside a checkpoint)."""
    names = sorted(names)
    code = [n for n in names if n.endswith(".py")]
    if code:
        return f"{label(code[0])}: remote code refused: a model or tokenizer is data, never Python code"
    for name in names:
        if name in CODE_MAP_FILES:
            try:
                settings = json.loads(read(name))
            except (ValueError, UnicodeDecodeError) as err:
                return f"{label(name)}: not a readable JSON file ({err})"
            if isinstance(settings, dict) and settings.get("auto_map"):
                return (f"{label(name)}: remote code refused: its auto_map names code to import "
                        f"({json.dumps(settings['auto_map'])[:120]})")
    return None


def check_tokenizer_files(files: Mapping[str, bytes], where: str | Path) -> None:
    """The files of a tokenizer record (``where``: the checkpoint or directory it comes from) are plain tokenizer
    data: plain names, tokenizer suffixes, no code. Checked before any is written, so a refusal leaves nothing."""
    def label(name: str) -> str:
        return f"{where} (tokenizer file {name!r})"

    for name in files:
        if Path(name).name != name or name.startswith("."):  # never write outside the directory
            raise ValueError(f"{label(name)}: refused: a tokenizer record holds plain file names only")
    why = remote_code_refusal(files, lambda name: files[name], label)
    if why:
        raise ValueError(why)
    other = sorted(n for n in files if not n.endswith(TOKENIZER_SUFFIXES))
    if other:
        raise ValueError(f"{label(other[0])}: refused: not a tokenizer file (a tokenizer record holds "
                         f"{', '.join(TOKENIZER_SUFFIXES)} files only)")


def check_model_directory(path: str | Path) -> None:
    """A local model or tokenizer directory holds no code for transformers to run (``.py`` files, ``auto_map``)."""
    path = Path(path)
    if path.is_dir():
        names = [p.name for p in path.iterdir() if p.is_file()]
        why = remote_code_refusal(names, lambda name: (path / name).read_bytes(), lambda name: str(path / name))
        if why:
            raise ValueError(why)


def _named_class(path: Path) -> dict[str, Any]:
    """For a local directory whose tokenizer_config.json names its class: a blank model config, so that
    AutoTokenizer does not build the model's config just to choose a class. transformers' XmodConfig takes an
    int ``adapter_reduction_factor`` only, and an xmod-lab export with a float one (legal here) would not load."""
    file = path / "tokenizer_config.json"
    if not (path.is_dir() and file.is_file()):
        return {}
    try:
        named = json.loads(file.read_text(encoding="utf-8")).get("tokenizer_class")
    except (ValueError, AttributeError):
        return {}  # AutoTokenizer reports an unreadable file itself
    return {"config": PretrainedConfig()} if isinstance(named, str) and named else {}


def load_tokenizer(name_or_path: str = XLMR_TOKENIZER) -> PreTrainedTokenizerBase:
    """A fast tokenizer from a hub id (XLM-R by default) or a local directory."""
    path = Path(name_or_path).expanduser()
    if name_or_path.startswith(("/", ".", "~")) and not path.is_dir():
        raise FileNotFoundError(
            f"Tokenizer directory {name_or_path!r} does not exist. Train one with "
            "xmod_lab.data.train_tokenizer(texts, vocab_size, save_dir) or give a hub id such as "
            f"{XLMR_TOKENIZER!r}."
        )
    if path.is_dir():
        check_model_directory(path)
    try:  # a hub repository with custom code is refused too (never an interactive prompt)
        with hub.reaching("tokenizer", name_or_path, "data.tokenizer"):
            tok = AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name_or_path, trust_remote_code=False,
                                                **_named_class(path))
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ValueError(f"tokenizer {name_or_path!r}: remote code refused: it needs custom code to load") from None
    if not tok.is_fast:
        raise ValueError(
            f"Tokenizer {name_or_path!r} is not a fast tokenizer; offset mappings (QA, NER) need one."
        )
    return forget_call_state(tok)


def forget_call_state(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """``tokenizer`` with the padding and truncation its Rust backend remembers switched off (returned, changed in
    place). transformers 5 leaves padding on after a ``padding=True`` call and ``save_pretrained`` writes it
    into tokenizer.json; every call through the tokenizer sets its own, but an encode straight on the backend
    (LM blocks) would pad or cut each batch, and :func:`tokenizer_fingerprint` rightly ignores that state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
        backend.no_truncation()
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> None:
    """``save_pretrained`` without call-time padding/truncation (:func:`forget_call_state`): an export or a
    checkpoint's record holds how the tokenizer splits text, not what its last call asked for."""
    forget_call_state(tokenizer).save_pretrained(str(directory))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    save_dir: str | Path | None = None,
    *,
    character_coverage: float = 1.0,
    seed_sentencepiece_size: int = 100_000,
) -> PreTrainedTokenizerBase:
    """Train a unigram sentencepiece model on ``texts`` and wrap it as an XLM-R tokenizer.

    ``vocab_size`` counts everything (specials and ``<mask>``), so ``len(tokenizer) <= vocab_size`` and a model
    with ``vocab_size`` embeddings fits it; a small corpus may give fewer pieces than asked for.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    if vocab_size < 16:
        raise ValueError(f"vocab_size={vocab_size} is too small for a sentencepiece model (use >= 16).")
    buffer = io.BytesIO()
    # sentencepiece owns ids 0-2 (<unk>, <s>, </s>); XLM-R adds <pad> and <mask>: hence vocab_size - 2.
    spm.SentencePieceTrainer.train(
        sentence_iterator=(t for t in texts if t.strip()),
        model_writer=buffer,
        vocab_size=vocab_size - 2,
        model_type="unigram",
        hard_vocab_limit=False,
        character_coverage=character_coverage,
        seed_sentencepiece_size=seed_sentencepiece_size,
        num_threads=1,
        minloglevel=2,
    )
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    if [p.piece for p in proto.pieces[:3]] != ["<unk>", "<s>", "</s>"]:
        raise RuntimeError("Unexpected sentencepiece special pieces; cannot build the XLM-R layout.")
    vocab = [(s, 0.0) for s in _SPECIALS] + [(p.piece, p.score) for p in proto.pieces[3:]] + [("<mask>", 0.0)]
    tok = XLMRobertaTokenizer(
        vocab=vocab, _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap
    )
    if save_dir is not None:
        save_dir = Path(save_dir)
        tok.save_pretrained(str(save_dir))
        (save_dir / "sentencepiece.bpe.model").write_bytes(buffer.getvalue())
        tok = AutoTokenizer.from_pretrained(str(save_dir))
    log.info("trained a sentencepiece tokenizer with %d tokens", len(tok))
    return tok


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A key that changes whenever the tokenizer would split text differently."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        payload = repr(sorted(tokenizer.get_vocab().items()))
    else:  # truncation/padding are call-time state the backend remembers, not part of how it splits text
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        payload = json.dumps(state, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def check_vocab_size(tokenizer: PreTrainedTokenizerBase, model_vocab_size: int) -> None:
    """Fail early when token ids could index past the model's embedding matrix (a CUDA assert otherwise)."""
    size = len(tokenizer)
    if size > model_vocab_size:
        raise ValueError(
            f"The tokenizer has {size} tokens but the model's vocab_size is {model_vocab_size}: ids >= "
            f"{model_vocab_size} would index past the embeddings. Use the tokenizer the model was trained with, "
            f"or build the model with vocab_size >= {size}."
        )


def tokenizer_record(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The tokenizer as data a checkpoint can carry: {"fingerprint": ..., "files": {name: bytes}} (the files of
    ``save_pretrained``; a few MB for XLM-R's, next to hundreds of MB of weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_tokenizer(tokenizer, tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    return {"fingerprint": tokenizer_fingerprint(tokenizer), "files": files}


def write_tokenizer_files(record: Mapping[str, Any], directory: str | Path, where: str | Path | None = None) -> Path:
    """The files of a :func:`tokenizer_record` written to ``directory`` (then ``load_tokenizer(directory)``), once
    :func:`check_tokenizer_files` accepts them (``where``: the record's source, for the message)."""
    directory = Path(directory)
    check_tokenizer_files(record["files"], where or directory)  # before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in record["files"].items():
        # every process of a DDP run may write the same files: each appears whole, never half-written
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, directory / name)
    return directory


def check_same_tokenizer(tokenizer: PreTrainedTokenizerBase, fingerprint: str, what: str, fix: str) -> None:
    """A clear error when ``tokenizer`` is not the one (by :func:`tokenizer_fingerprint`) the model was trained
    with: every id would mean another piece, and the scores would be plausible-looking nonsense."""
    have = tokenizer_fingerprint(tokenizer)
    if have != fingerprint:
        raise ValueError(
            f"The data's tokenizer ({getattr(tokenizer, 'name_or_path', '?')}, fingerprint {have}) is not the "
            f"tokenizer {what} was trained with (fingerprint {fingerprint}). {fix}"
        )
