"""Trainer arguments of training stages, checked against the TRL config class they will construct."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import tempfile
import typing
import warnings
from collections.abc import Iterator
from typing import Any

from pydantic import TypeAdapter, ValidationError

from collab.stages.kinds import KINDS, load

# Validation checks keys and types, not this machine's hardware: a GPU recipe must validate on a laptop.
_HARDWARE_NEUTRAL = {"bf16": False, "fp16": False, "use_cpu": True, "tf32": None}


def trainer_config_class(kind: str) -> type:
    """The TRL config class of a trainer kind (SFTConfig, DPOConfig, ...), from collab.stages.kinds."""
    return load(KINDS[kind].trl_config)  # type: ignore[arg-type]  # every trainer kind names one


@functools.cache
def _field_adapters(cls: type) -> dict[str, TypeAdapter | None]:
    import dataclasses

    hints = typing.get_type_hints(cls)
    adapters: dict[str, TypeAdapter | None] = {}
    for f in dataclasses.fields(cls):
        try:
            adapters[f.name] = TypeAdapter(hints[f.name])
        except Exception:  # noqa: BLE001 - exotic annotations: the config's own __post_init__ still checks them
            adapters[f.name] = None
    return adapters


def trainer_args_with_defaults(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` over the defaults of the kind's TRL config class: every argument the trainer will see, for readers
    that need a value the recipe left out (the planner's batch sizes, the vLLM engine of an online stage)."""
    import dataclasses

    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(trainer_config_class(kind)):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[f.name] = f.default_factory()  # type: ignore[misc]
    return {**defaults, **args}


def coerce_trainer_args(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """`args` with number-like strings turned into the numbers the TRL config expects.

    YAML reads `5e-5` (no dot) as the string "5e-5"; validation accepts it as a float, but the config would keep
    the string and training would fail deep inside the optimizer. Call after `check_trainer_args` passed."""
    adapters = _field_adapters(trainer_config_class(kind))
    out = dict(args)
    for key, value in args.items():
        adapter = adapters.get(key)
        if isinstance(value, str) and adapter is not None:
            converted = adapter.validate_python(value)
            if isinstance(converted, (int, float)) and not isinstance(converted, bool):
                out[key] = converted
    return out


# The candidates' reply length and temperature of online stages are TRL's own keys (the table's `reply_length`).
# generation_kwargs would override them silently (TRL passes it last to the sampler), so both places are refused.
_GENERATION_ALIASES = {"max_tokens": "length", "max_new_tokens": "length", "max_completion_length": "length",
                       "temperature": "temperature"}


def _generation_kwargs_conflicts(kind: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """Reply length or temperature given in `generation_kwargs`, where it would override TRL's own key unseen."""
    extra = args.get("generation_kwargs")
    reply_length = KINDS[kind].reply_length
    if reply_length is None or not isinstance(extra, dict):
        return []
    problems = []
    for key in extra:
        setting = _GENERATION_ALIASES.get(key)
        if setting is not None:
            own = reply_length if setting == "length" else "temperature"
            message = (f"sets the reply {setting}, which is `trainer.{own}`'s job; set trainer.{own} instead and "
                       "remove it from generation_kwargs")
            problems.append((f"generation_kwargs.{key}", message))
    return problems


def check_trainer_args(kind: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """Problems with a stage's `trainer` arguments as (key, message); empty when the TRL config accepts them."""
    cls = trainer_config_class(kind)
    adapters = _field_adapters(cls)
    problems: list[tuple[str, str]] = []
    for key, value in args.items():
        if key not in adapters:
            close = difflib.get_close_matches(key, list(adapters), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append((key, f"is not an argument of {cls.__name__}{hint}"))
        elif key == "output_dir":
            problems.append((key, "is set by collab (the stage's folder in the run directory); remove it"))
        elif adapters[key] is not None:
            try:
                adapters[key].validate_python(value)
            except ValidationError as e:
                problems.append((key, f"has the wrong type for {cls.__name__}: {e.errors()[0]['msg']}"))
    problems += _generation_kwargs_conflicts(kind, args)
    if problems:
        return problems
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _no_device_setup():
            warnings.simplefilter("ignore")
            cls(output_dir=tmp, **{**args, **_HARDWARE_NEUTRAL})
    except (TypeError, ValueError) as e:
        problems.append(("", f"{cls.__name__} rejects these arguments: {e}"))
    return problems


# Set by launchers (accelerate, torchrun, Slurm, MPI); seeing them, accelerate joins a process group.
_DISTRIBUTED_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                    "MV2_COMM_WORLD_SIZE", "ACCELERATE_USE_CPU")


@contextlib.contextmanager
def _no_device_setup() -> Iterator[None]:
    """Build a TRL config for validation without touching the process's devices.

    A TrainingArguments sets up accelerate's process-wide state when it is built. Under a launcher, the
    hardware-neutral `use_cpu=True` would then open a gloo process group in the trainer itself, and the real config
    built later would inherit it: on a GPU every gather went through gloo and failed. So the launcher's variables
    are hidden while the config is built, and the state it created is reset afterwards."""
    saved = {key: os.environ.pop(key) for key in _DISTRIBUTED_ENV if key in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
