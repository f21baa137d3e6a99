"""Dataset language codes -> X-MOD adapter codes -> indices into the model's language list.

Datasets name languages their own way (`de`, `zh-Hant`, `PAN-X.de`'s `de`, UD's `German`); X-MOD names
adapters `de_DE`, `zh_TW`. The map between the two is configuration (``language_map`` overrides or extends
:data:`DEFAULT_LANGUAGE_MAP`); the index of an adapter always comes from the model's own ``languages`` list,
because the order is checkpoint-specific.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import hanzidentifier

from xmod_lab.models.configuration import PUBLISHED_LANGUAGES

# ISO 639-1 prefix -> X-MOD code for every adapter of the published checkpoints. Chinese defaults to
# simplified (zh_CN), as XNLI/MLQA/PAWS-X `zh` are (a Traditional dataset is warned about: script_mismatch).
_ISO_TO_XMOD = {
    code.split("_")[0]: code
    for codes in PUBLISHED_LANGUAGES.values()
    for code in codes
    if code != "zh_TW"
}

# Aliases seen in XTREME-family datasets: script/region variants, old ISO codes, romanised corpora
# (fairseq maps `hi_rom` to the Hindi adapter), and the language names that UD-POS configs use.
_ALIASES = {
    "zh-Hans": "zh_CN", "zh-CN": "zh_CN", "zh-cn": "zh_CN", "zh_Hans": "zh_CN",
    "zh-Hant": "zh_TW", "zh-TW": "zh_TW", "zh-tw": "zh_TW", "zh_Hant": "zh_TW",
    "nb": "no_XX", "nn": "no_XX", "iw": "he_IL", "in": "id_ID", "fil": "tl_XX",
    "hi_rom": "hi_IN", "ur_rom": "ur_PK", "bn_rom": "bn_IN", "ta_rom": "ta_IN", "te_rom": "te_IN",
    "Afrikaans": "af_ZA", "Arabic": "ar_AR", "Basque": "eu_ES", "Bulgarian": "bg_BG", "Chinese": "zh_CN",
    "Dutch": "nl_XX", "English": "en_XX", "Estonian": "et_EE", "Finnish": "fi_FI", "French": "fr_XX",
    "German": "de_DE", "Greek": "el_GR", "Hebrew": "he_IL", "Hindi": "hi_IN", "Hungarian": "hu_HU",
    "Indonesian": "id_ID", "Italian": "it_IT", "Japanese": "ja_XX", "Kazakh": "kk_KZ", "Korean": "ko_KR",
    "Marathi": "mr_IN", "Persian": "fa_IR", "Portuguese": "pt_XX", "Russian": "ru_RU", "Spanish": "es_XX",
    "Tagalog": "tl_XX", "Tamil": "ta_IN", "Telugu": "te_IN", "Thai": "th_TH", "Turkish": "tr_TR",
    "Urdu": "ur_PK", "Vietnamese": "vi_VN",
    # TyDi QA names languages in its ids ("finnish-1438...-1")
    "arabic": "ar_AR", "bengali": "bn_IN", "english": "en_XX", "finnish": "fi_FI", "indonesian": "id_ID",
    "japanese": "ja_XX", "korean": "ko_KR", "russian": "ru_RU", "swahili": "sw_KE", "telugu": "te_IN",
    "thai": "th_TH",
}  # fmt: skip

DEFAULT_LANGUAGE_MAP: dict[str, str] = {**_ISO_TO_XMOD, **_ALIASES}

_XMOD_CODE = re.compile(r"^[a-z]{2,3}_[A-Z]{2}$")


def to_xmod_language(code: str, language_map: Mapping[str, str] | None = None) -> str:
    """The X-MOD adapter code for a dataset language code (``language_map`` entries win over the default)."""
    if language_map and code in language_map:
        return str(language_map[code])
    if code in DEFAULT_LANGUAGE_MAP:
        return DEFAULT_LANGUAGE_MAP[code]
    if _XMOD_CODE.match(code):  # already an adapter code such as `rm_CH`
        return code
    raise ValueError(
        f"No X-MOD language code for dataset language {code!r}. Add it to the datamodule's `language_map`, "
        f"e.g. language_map: {{{code}: xx_XX}}, using a code from the model's `languages`."
    )


def language_ids(codes: Sequence[str], languages: Sequence[str], *, role: str = "data") -> list[int]:
    """Indices of X-MOD ``codes`` in the model's ``languages``; a clear error for any without an adapter."""
    index = {lang: i for i, lang in enumerate(languages)}
    missing = [c for c in codes if c not in index]
    if missing:
        raise ValueError(
            f"{role} language(s) {missing} have no adapter in the model, whose languages are {list(languages)}. "
            "Pick languages the backbone has, map the dataset code to one of its adapters with languages.map "
            "(e.g. '+languages.map={en-ar:ar_AR}'), or add an adapter with +languages.add.<code>=<init_from_language>."
        )
    return [index[c] for c in codes]


_CHINESE_ADAPTERS = {"simplified": "zh_CN", "traditional": "zh_TW"}


def chinese_script(text: str) -> str | None:
    """``simplified`` / ``traditional`` when the text's Chinese characters clearly use one script, else None.

    Each distinct character is classified by hanzidentifier (CC-CEDICT's full character sets): characters
    of both scripts (most of them) say nothing; a script wins when its own characters occur at least once and
    at least 4 times as often as the other's (a few stray characters, a name or a quote, do not decide).
    """
    counts = Counter(ch for ch in text if ord(ch) >= 0x2E80)  # CJK blocks and beyond: skips ASCII, Latin, ...
    only = {"traditional": 0, "simplified": 0}
    for ch, n in counts.items():
        kind = hanzidentifier.identify(ch)
        if kind == hanzidentifier.TRADITIONAL:
            only["traditional"] += n
        elif kind == hanzidentifier.SIMPLIFIED:
            only["simplified"] += n
    for script, other in (("traditional", "simplified"), ("simplified", "traditional")):
        if only[script] and only[script] >= 4 * only[other]:
            return script
    return None


def script_mismatch(text: str, code: str, adapter: str, languages: Sequence[str]) -> str | None:
    """A warning when dataset language ``code``, mapped to Chinese adapter ``adapter``, is written in the
    other script (UD-POS's `zh` is Traditional, the default map sends `zh` to the Simplified `zh_CN`), with
    the map entry that fixes it; None when the script matches or cannot be told."""
    if adapter not in _CHINESE_ADAPTERS.values():
        return None
    script = chinese_script(text)
    if script is None or _CHINESE_ADAPTERS[script] == adapter:
        return None
    right = _CHINESE_ADAPTERS[script]
    fix = (f"map it to the backbone's {right} adapter: +languages.map={{{code}:{right}}} (or languages.map.{code}={right})"
           if right in languages else f"the backbone has no {right} adapter; add one with +languages.add.{right}={adapter} "
           f"and +languages.map={{{code}:{right}}}")
    return f"dataset language {code!r} is written in {script} Chinese but is scored with the {adapter} adapter; {fix}"
