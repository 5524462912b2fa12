"""Strict JSON extraction: finds the object in real model output shapes, never coerces a type."""

from __future__ import annotations

import pytest

from collab.jsonparse import JSONParseError, parse_json_object

SCHEMA = {"thought": str, "score": float}


def test_bare_object_parses() -> None:
    assert parse_json_object('{"thought": "ok", "score": 0.5}', SCHEMA) == {"thought": "ok", "score": 0.5}


def test_object_inside_json_fence_with_prose() -> None:
    text = 'Here is my rating:\n```json\n{"thought": "asks well", "score": 1}\n```\nHope that helps.'
    assert parse_json_object(text, SCHEMA) == {"thought": "asks well", "score": 1}


def test_object_embedded_in_prose_without_fence() -> None:
    text = 'Sure. {"thought": "fine", "score": 0} That is all.'
    assert parse_json_object(text, SCHEMA)["score"] == 0


def test_braces_inside_strings_do_not_break_balancing() -> None:
    text = 'Output: {"thought": "use a dict like {a: 1}} here", "score": 0.5} trailing'
    assert parse_json_object(text, SCHEMA)["thought"] == "use a dict like {a: 1}} here"


def test_prose_braces_before_the_real_object_are_skipped() -> None:
    text = 'I considered {this} first. {"thought": "t", "score": 1.0}'
    assert parse_json_object(text, SCHEMA)["score"] == 1.0


def test_string_number_is_rejected_not_coerced() -> None:
    with pytest.raises(JSONParseError, match="'score' must be a number"):
        parse_json_object('{"thought": "t", "score": "5"}', SCHEMA)


def test_number_where_string_expected_is_rejected() -> None:
    with pytest.raises(JSONParseError, match="'thought' must be a string"):
        parse_json_object('{"thought": 5, "score": 1}', SCHEMA)


def test_bool_is_not_a_number() -> None:
    with pytest.raises(JSONParseError, match="must be a number"):
        parse_json_object('{"thought": "t", "score": true}', SCHEMA)


def test_int_schema_rejects_float() -> None:
    with pytest.raises(JSONParseError, match="'n' must be an integer"):
        parse_json_object('{"n": 1.5}', {"n": int})
    assert parse_json_object('{"n": 2}', {"n": int}) == {"n": 2}


def test_missing_key_is_reported() -> None:
    with pytest.raises(JSONParseError, match="missing key 'score'"):
        parse_json_object('{"thought": "t"}', SCHEMA)


def test_optional_key_type_checked_only_when_present() -> None:
    assert parse_json_object('{"a": "x"}', {"a": str}, {"b": str}) == {"a": "x"}
    with pytest.raises(JSONParseError, match="'b' must be a string"):
        parse_json_object('{"a": "x", "b": 3}', {"a": str}, {"b": str})


def test_extra_keys_are_allowed() -> None:
    assert parse_json_object('{"thought": "t", "score": 1, "extra": [1]}', SCHEMA)["extra"] == [1]


@pytest.mark.parametrize("text", ["", "   ", None])
def test_empty_output_is_an_error(text: str | None) -> None:
    with pytest.raises(JSONParseError, match="empty output"):
        parse_json_object(text, SCHEMA)


def test_garbage_is_an_error_with_reason() -> None:
    with pytest.raises(JSONParseError, match="no JSON object found"):
        parse_json_object("I think the score is five.", SCHEMA)
    with pytest.raises(JSONParseError, match="invalid JSON"):
        parse_json_object('{"thought": "t", "score": }', SCHEMA)


def test_top_level_array_is_not_an_object() -> None:
    with pytest.raises(JSONParseError):
        parse_json_object('[{"thought": "t", "score": 1}]x', {"thought": str, "score": float, "missing": str})


def test_nan_is_rejected() -> None:
    with pytest.raises(JSONParseError):
        parse_json_object('{"thought": "t", "score": NaN}', SCHEMA)


def test_single_quoted_python_dict_is_rejected() -> None:
    with pytest.raises(JSONParseError, match="invalid JSON"):
        parse_json_object("{'thought': 't', 'score': 1}", SCHEMA)
