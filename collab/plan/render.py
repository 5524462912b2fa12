"""Tables of a plan: one per stage (rows: quantities, columns: upper bound and expected) and a total."""

from __future__ import annotations

from dataclasses import fields

from rich.console import Console
from rich.table import Table

from collab.plan.kvcache import gib
from collab.plan.planner import RecipePlan, StagePlan
from collab.stages.kinds import KINDS


def number(value: float) -> str:
    """1234 -> 1,234; 1234567 -> 1.23M; 44.8 -> 45; 2.5 -> 2.50."""
    if value >= 1e9:
        return f"{value / 1e9:.2f}B"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 10 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def usd(value: float | None) -> str:
    return "unknown (no price)" if value is None else f"${value:,.2f}"


def hours(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _rows(plan: StagePlan, gpus: int, cpu: bool = False) -> list[tuple[str, str, str]]:
    b, e = plan.bound, plan.expected
    out: list[tuple[str, str, str]] = []

    def add(label: str, get: object, fmt: object = number) -> None:
        out.append((label, fmt(get(b)), fmt(get(e))))  # type: ignore[operator]

    if b.counts.conversations:
        online = KINDS[plan.kind].online is not None
        add("completions scored" if online else "conversations", lambda s: s.counts.conversations)
        add("turns of the prompts' conversations" if online else "turns per conversation", lambda s: s.counts.turns)
        for party in ("policy", "simulator", "judge"):
            usage = getattr(b.counts, party)
            if usage.requests == 0:
                continue
            add(f"{party} calls (batched)", lambda s, p=party: getattr(s.counts, p).calls)
            add(f"{party} requests", lambda s, p=party: getattr(s.counts, p).requests)
            if party == "policy" and b.counts.sampled:
                add("  of which candidates" if plan.kind == "data" else "  of which completions",
                    lambda s: s.counts.sampled)
            add(f"{party} input tokens", lambda s, p=party: getattr(s.counts, p).input_tokens)
            add(f"{party} output tokens", lambda s, p=party: getattr(s.counts, p).output_tokens)
        for party in b.api_usd:
            add(f"API cost: {party}", lambda s, p=party: s.api_usd[p], usd)
        if b.api_usd:
            add("API cost: total", lambda s: s.total_usd, usd)
        if not cpu:
            add("GPU-hours: generation", lambda s: s.generation_gpu_hours, hours)
        if b.api_hours:
            add("hours waiting on the API", lambda s: s.api_hours, hours)
    if b.steps is not None:
        add(f"{b.steps.unit} per epoch", lambda s: s.steps.rows)
        add("effective batch", lambda s: s.steps.effective_batch)
        add("optimizer steps per epoch", lambda s: s.steps.steps_per_epoch)
        add("epochs", lambda s: s.steps.epochs)
        add("optimizer steps", lambda s: s.steps.total)
        if not cpu:
            add("GPU-hours: training", lambda s: s.training_gpu_hours, hours)
    if not cpu and (b.wall_hours(gpus) or e.wall_hours(gpus)):
        add(f"wall-clock hours on {gpus} GPUs", lambda s: s.wall_hours(gpus), hours)
    return out


def stage_table(plan: StagePlan, gpus: int, cpu: bool = False) -> Table:
    table = Table(title=f"stage '{plan.label}' ({plan.kind})", title_justify="left", caption="\n".join(plan.notes),
                  caption_justify="left")
    table.add_column("")
    table.add_column("upper bound", justify="right")
    table.add_column("expected", justify="right")
    for row in _rows(plan, gpus, cpu):
        table.add_row(*row)
    return table


def total_table(plan: RecipePlan, cpu: bool = False) -> Table:
    table = Table(title=f"recipe '{plan.recipe}': total", title_justify="left")
    table.add_column("")
    table.add_column("upper bound", justify="right")
    table.add_column("expected", justify="right")

    def total_usd(pick: str) -> str:
        values = [getattr(s, pick).total_usd for s in plan.stages if getattr(s, pick).api_usd]
        return usd(None if any(v is None for v in values) else sum(v for v in values if v is not None))

    table.add_row("API cost", total_usd("bound"), total_usd("expected"))
    if cpu:
        return table
    gpu = [sum(getattr(s, pick).gpu_hours for s in plan.stages) for pick in ("bound", "expected")]
    table.add_row("GPU-hours", hours(gpu[0]), hours(gpu[1]))
    gpus = plan.throughput.gpus
    wall = [sum(getattr(s, pick).wall_hours(gpus) for s in plan.stages) for pick in ("bound", "expected")]
    table.add_row(f"wall-clock hours on {gpus} GPUs", hours(wall[0]), hours(wall[1]))
    return table


def engine_table(plan: RecipePlan) -> Table:
    """The vLLM engines of the planned stages: the KV cache of one max_model_len sequence against what their share
    of a GPU leaves once the weights are loaded (collab.plan.kvcache)."""
    gpu = plan.throughput.gpu_memory_gb
    table = Table(title=f"vLLM engines on a {gpu:g} GiB GPU (--gpu-memory-gb)", title_justify="left",
                  caption="KV cache: one sequence of max_model_len tokens. free: gpu_memory_utilization x GPU memory "
                  "- weights (per GPU under tensor parallelism); a colocated engine leaves the rest of each GPU to "
                  "its trainer. Activations and CUDA graphs come on top.", caption_justify="left")
    for column in ("engine", "model", "max_model_len", "KV cache, GiB", "free, GiB", "check"):
        table.add_column(column, justify="right" if "GiB" in column or column == "max_model_len" else "left")
    for f in plan.engines:
        e = f.engine
        if f.skipped:
            table.add_row(e.name, e.model, str(e.max_model_len or "model's own"), "", "", f"skipped: {f.skipped}")
            continue
        table.add_row(e.name, e.model, str(f.max_model_len), gib(f.kv_bytes), gib(f.free_bytes),
                      "fits" if f.fits else "DOES NOT FIT")
    return table


def assumptions_text(plan: RecipePlan, cpu: bool = False) -> str:
    throughput = [] if cpu else [plan.throughput]
    parts = [f"{f.name.replace('_', '-')}={getattr(obj, f.name):g}" for obj in (plan.tokens, *throughput)
             for f in fields(obj)]
    return "assumptions (override with --NAME VALUE): " + ", ".join(parts)


CPU_NOTE = ("a CPU recipe (every trainer stage uses the cpu accelerate config, no vLLM): hours are not estimated, "
            "because the throughput assumptions describe GPUs; pass --gpus N to plan it on GPUs")


def render(plan: RecipePlan, console: Console, *, cpu: bool = False) -> None:
    """Print every stage's table, the total and the assumptions used; `cpu` leaves out every GPU quantity."""
    for stage in plan.stages:
        console.print(stage_table(stage, plan.throughput.gpus, cpu))
    if len(plan.stages) > 1:
        console.print(total_table(plan, cpu))
    if plan.engines:
        console.print(engine_table(plan))
    if cpu:
        console.print(CPU_NOTE, highlight=False)
    console.print(assumptions_text(plan, cpu), highlight=False)

