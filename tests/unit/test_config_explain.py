"""`collab recipes explain` and the generated reference: every key's meaning comes from the schema's fields."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from collab.cli import main
from collab.config import Recipe
from collab.config.explain import (
    REFERENCE_BEGIN,
    REFERENCE_END,
    explain,
    reference_markdown,
    render,
    stage_classes,
    write_reference,
)
from collab.errors import CollabError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "recipes.md"


def sections() -> list[type[BaseModel]]:
    """Every section class reachable from Recipe, stages included."""
    found: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [Recipe, *stage_classes().values()]
    while todo:
        cls = todo.pop()
        if cls in found:
            continue
        found.append(cls)
        for field in cls.model_fields.values():
            args = typing.get_args(field.annotation) or (field.annotation,)
            todo += [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
    return found


@pytest.mark.parametrize("cls", sections(), ids=lambda c: c.__name__)
def test_every_field_is_described_next_to_its_declaration(cls: type[BaseModel]) -> None:
    undocumented = [name for name, field in cls.model_fields.items() if not (field.description or "").strip()]
    assert undocumented == []
    assert "Attributes:" not in (cls.__doc__ or "")  # the descriptions moved into the fields


def test_explain_shows_type_default_and_description_of_a_field() -> None:
    info = explain("reward.window")
    assert (info.key, info.type, info.default) == ("reward.window", "int, >= 0", "2")
    assert info.description.startswith("Future turns rolled out after the candidate")


def test_explain_reaches_a_stage_field_through_its_kind() -> None:
    info = explain("stages.dpo.trainer")
    assert (info.type, info.default) == ("dict[str, any]", "{}")
    assert "TRL config class" in info.description
    assert explain("stages.data.max_new_tokens").default == "256"
    assert explain("stages.eval.max_new_tokens").default == "null"


def test_explain_of_a_section_lists_its_keys() -> None:
    text = render(explain("simulator.backend"))
    assert "section (BackendConfig) | null" in text
    assert "simulator.backend.max_model_len  (int | null, >= 64; default null)" in text


def test_explain_without_a_key_lists_the_top_level_and_the_stage_kinds() -> None:
    text = render(explain(""))
    assert "    reward  (section (RewardConfig); default (its keys' defaults))" in text
    assert "stages.KIND.KEY  (KIND: sft, dpo, online_dpo, grpo, rloo, data, eval)" in text


def test_unknown_key_names_the_closest_valid_keys() -> None:
    with pytest.raises(CollabError) as info:
        explain("reward.windw")
    assert "'reward.windw' is not a recipe key" in str(info.value)
    assert "did you mean 'reward.window'?" in str(info.value)


def test_unknown_stage_kind_names_the_closest_kinds() -> None:
    with pytest.raises(CollabError) as info:
        explain("stages.ppo.trainer")
    assert "did you mean 'stages.dpo', 'stages.grpo'?" in str(info.value)


def test_a_key_below_a_value_is_refused() -> None:
    with pytest.raises(CollabError, match="'reward.window' is a value"):
        explain("reward.window.x")


def test_cli_prints_the_explanation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "explain", "reward.policy_max_new_tokens"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reward.policy_max_new_tokens\n  type:    int, >= 1\n  default: 256\n")
    assert "The policy's reply length in tokens, the recipe's default" in out


def test_cli_reports_an_unknown_key_as_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes", "explain", "rewrd.window"]) != 0
    assert "did you mean 'reward'?" in capsys.readouterr().err


def test_docs_reference_is_generated_from_the_schema() -> None:
    text = DOCS.read_text(encoding="utf-8")
    generated = text.split(REFERENCE_BEGIN, 1)[1].split(REFERENCE_END, 1)[0]
    assert generated == "\n" + reference_markdown(), (
        "docs/recipes.md's key reference is stale; run `collab recipes explain --write-reference docs/recipes.md`")


def test_reference_describes_a_shared_section_once() -> None:
    reference = reference_markdown()
    assert reference.count("(BackendConfig)\n") == 1
    assert "| `backend` | section (BackendConfig) \\| null | `null` | The model playing the user (`llm` only). Its " \
           "keys: see `policy`. |" in reference


def test_write_reference_replaces_only_the_marked_section(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text(f"# Title\n\n{REFERENCE_BEGIN}\nold\n{REFERENCE_END}\n\nafter\n")
    assert write_reference(path) is True
    assert path.read_text() == f"# Title\n\n{REFERENCE_BEGIN}\n{reference_markdown()}{REFERENCE_END}\n\nafter\n"
    assert write_reference(path) is False


def test_write_reference_without_markers_says_where_they_go(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("# Title\n")
    with pytest.raises(CollabError, match="no generated-reference markers"):
        write_reference(path)


def test_extends_is_explained_although_the_schema_never_sees_it() -> None:
    from collab.config.explain import explain

    info = explain("extends")

    assert info.key == "extends" and "never inherited" in info.description and info.section is None
