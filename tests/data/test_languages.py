import pytest

from xmod_lab.data.languages import DEFAULT_LANGUAGE_MAP, language_ids, to_xmod_language


@pytest.mark.parametrize(
    ("code", "expected"),
    [("de", "de_DE"), ("zh", "zh_CN"), ("zh-Hant", "zh_TW"), ("no", "no_XX"), ("en", "en_XX"), ("sw", "sw_KE"),
     ("hi_rom", "hi_IN"), ("German", "de_DE"), ("rm_CH", "rm_CH")],
)  # fmt: skip
def test_default_map(code, expected):
    assert to_xmod_language(code) == expected


def test_default_map_covers_xtreme_languages_with_an_xmod_adapter():
    xtreme = "af ar bg bn de el en es et eu fa fi fr he hi hu id it ja jv ka kk ko ml mr ms my nl pt ru sw ta te th tl tr ur vi zh"
    for code in xtreme.split():
        assert DEFAULT_LANGUAGE_MAP[code].startswith(code + "_")


def test_override_wins_and_unknown_code_is_a_clear_error():
    assert to_xmod_language("zh", {"zh": "zh_TW"}) == "zh_TW"
    with pytest.raises(ValueError, match="language_map"):
        to_xmod_language("yo")


def test_language_ids_follow_model_order_and_name_missing_adapters():
    assert language_ids(["de_DE", "en_XX"], ["en_XX", "de_DE"]) == [1, 0]
    with pytest.raises(ValueError, match=r"\['fi_FI'\] have no adapter"):
        language_ids(["en_XX", "fi_FI"], ["en_XX", "de_DE"], role="eval")
