"""FINN-compatible folding configs and automatic folding searches over node dicts.

* JSON: ``{"Defaults": {attr: [value, [op types] | "all"], ...}, "<node name>": {attr: value}}``
  read, written and applied like FINN's ``ApplyConfig``.
* :func:`set_folding` re-implements FINN's ``SetFolding`` (``target_fps`` flow);
  :func:`fold_for_fps` wraps it and refuses targets it cannot reach.
* :func:`fold_to_fit` finds the fastest folding whose resource estimate fits a board;
  :func:`fold_for_fps` with a board falls back to the same search when SetFolding's folding
  misses the target or does not fit.

Notes FINN prints as warnings (unconfigured nodes, ops SetFolding skips) are logged on the
``hwbed.fpga.finn.folding`` logger at INFO.

Every function returns new node dicts and leaves its inputs untouched.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hwbed.fpga.finn.boards import RESOURCE_KEYS, Board
from hwbed.fpga.finn.estimates import network_performance, node_cycles, node_resources
from hwbed.fpga.finn.op_specs import (
    OP_SPECS,
    FinnNode,
    FoldingError,
    attr,
    bitwidth,
    check_node,
    divisors,
    spec,
)

__all__ = [
    "BudgetExceededError",
    "FoldingError",
    "InfeasibleTargetError",
    "apply_folding_config",
    "check_folding_file",
    "extract_folding_config",
    "fold_for_fps",
    "fold_to_fit",
    "load_folding_config",
    "save_folding_config",
    "set_folding",
    "target_cycles",
    "validate_folding",
]

_MVAU_OPS = ("MVAU_hls", "MVAU_rtl")
# ops SetFolding folds by PE up to NumChannels (FINN main)
_PE_OPS = (
    "AddStreams_hls",
    "ChannelwiseOp_hls",
    "DuplicateStreams_hls",
    "GlobalAccPool_hls",
    "Thresholding_hls",
    "Thresholding_rtl",
)
# ops FINN main's SetFolding leaves alone although they fold; fold_for_fps folds them too
_SKIPPED_BY_FINN = ("StreamingMaxPool_hls", "FMPadding_rtl", "DownSampler_hls", "ChannelPad_hls")
_FOLDING_ATTRS = {a for sp in OP_SPECS.values() for a in (*sp.config, *sp.fold)}
_NODE_NAME_RE = re.compile(r"^(?P<op>.+)_(?P<index>\d+)$")
_NAME_ALIASES = {"Affine_hls": "ChannelwiseOp_hls"}  # hwbed's float head, costed as FINN's op

log = logging.getLogger(__name__)


class InfeasibleTargetError(FoldingError):
    """The cycle target is below what the network can reach."""

    def __init__(self, required_cycles: int, achievable_cycles: int, bottleneck: str, msg: str):
        super().__init__(msg)
        self.required_cycles = required_cycles
        self.achievable_cycles = achievable_cycles
        self.bottleneck = bottleneck


class BudgetExceededError(FoldingError):
    """The network does not fit the resource budget even fully folded.

    ``folding`` holds that cheapest folding (the node dicts), for a build that goes on.
    """

    def __init__(
        self,
        needed: dict[str, float],
        budget: dict[str, float],
        msg: str,
        folding: list[dict[str, Any]] | None = None,
    ):
        super().__init__(msg)
        self.needed = needed
        self.budget = budget
        self.folding = folding


# ------------------------------------------------------------------- config files


def load_folding_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a FINN folding/HW config JSON and check its structure; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FoldingError(f"folding config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise FoldingError(f"folding config {path} cannot be read: {err}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise FoldingError(f"folding config {path} is not valid JSON: {err}") from None
    try:
        _check_config(config)
    except FoldingError as err:
        raise FoldingError(f"folding config {path}: {err}") from None
    return config


def check_folding_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Load a folding config and check it without the network, before a long build.

    Beyond :func:`load_folding_config`: node names must be ``<op type>_<index>`` of an op
    type hwbed knows, their keys folding attributes of that op, ``Defaults`` op types known,
    and ``PE``/``SIMD`` positive integers. Names are matched to the network when applied.
    """
    config = load_folding_config(path)

    def fail(msg: str) -> None:
        raise FoldingError(f"folding config {path}: {msg}")

    for key, pairs in config.get("Defaults", {}).items():
        if key not in _FOLDING_ATTRS:
            known = ", ".join(sorted(_FOLDING_ATTRS))
            fail(f"Defaults[{key!r}] is not a folding attribute ({known})")
        for val, ops in zip(pairs[::2], pairs[1::2], strict=True):
            unknown = [op for op in ops if op not in OP_SPECS] if ops != "all" else []
            if unknown:
                fail(f"Defaults[{key!r}] names unknown op types {', '.join(map(str, unknown))}")
            _check_value(key, val, fail, f"Defaults[{key!r}]")
    for name, entry in config.items():
        if name == "Defaults":
            continue
        m = _NODE_NAME_RE.match(name)
        op = _NAME_ALIASES.get(m["op"], m["op"]) if m else None
        if op not in OP_SPECS:
            fail(
                f"node name {name!r} is not <op type>_<index> for an op type hwbed folds "
                f"({', '.join(OP_SPECS)})"
            )
        sp = OP_SPECS[op]
        allowed = (*sp.config, *sp.fold)
        for key, val in entry.items():
            if key not in allowed:
                known = ", ".join(allowed) or "none"
                fail(f"node {name!r} has no folding attribute {key!r} (allowed: {known})")
            _check_value(key, val, fail, f"{name}.{key}")
            if key in sp.enums and val not in sp.enums[key]:
                fail(f"{name}.{key}={val!r} not one of {', '.join(sp.enums[key])}")
    return config


def _check_value(key: str, val: Any, fail, where: str) -> None:
    if key in ("PE", "SIMD") and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
        fail(f"{where}={val!r} must be a positive integer")


def save_folding_config(config: Mapping[str, Mapping[str, Any]], path: str | Path) -> None:
    """Write a folding config as FINN does (``json.dump`` with indent 2)."""
    _check_config(config)
    Path(path).write_text(json.dumps(config, indent=2))


def extract_folding_config(nodes: Sequence[FinnNode]) -> dict[str, dict[str, Any]]:
    """FINN's ``auto_folding_config.json`` for these nodes: their folding attributes."""
    config: dict[str, dict[str, Any]] = {"Defaults": {}}
    for n in nodes:
        values = {key: attr(n, key) for key in spec(n).config}
        if values:
            config[n["name"]] = values
    return config


def _check_config(config: Any) -> None:
    if not isinstance(config, Mapping):
        raise FoldingError(f"folding config must be a JSON object, got {type(config).__name__}")
    for key, value in config.items():
        if not isinstance(value, Mapping):
            raise FoldingError(f"folding config entry {key!r} must be an object, got {value!r}")
    for key, value in config.get("Defaults", {}).items():
        pairs = list(value) if isinstance(value, list) else None
        if not pairs or len(pairs) % 2:
            raise FoldingError(
                f"Defaults[{key!r}] must be [value, op types or 'all', ...], got {value!r}"
            )
        for ops in pairs[1::2]:
            if ops == "all" and len(pairs) > 2:
                raise FoldingError(f"Defaults[{key!r}]: 'all' must be the only op selector")
            if ops != "all" and not isinstance(ops, list):
                raise FoldingError(f"Defaults[{key!r}]: op selector {ops!r} is not a list")


def apply_folding_config(
    nodes: Sequence[FinnNode],
    config: Mapping[str, Mapping[str, Any]] | str | Path,
    *,
    mvau_wwidth_max: int | None = None,
) -> list[dict[str, Any]]:
    """Apply a folding config (dict or JSON path) like FINN's ``ApplyConfig`` and validate.

    Defaults are set first on nodes whose op type is listed (or on all for ``"all"``), then
    the node's own entry. Entries naming no node raise :class:`FoldingError`; nodes without
    an entry keep their attributes and are reported in a warning, as FINN does.
    """
    if not isinstance(config, Mapping):
        config = load_folding_config(config)
    _check_config(config)
    names = [n.get("name") for n in nodes]
    unknown = [k for k in config if k != "Defaults" and k not in names]
    if unknown:
        raise FoldingError(
            f"folding config names nodes not in the network: {', '.join(unknown)}; "
            f"network nodes: {', '.join(map(str, names))}"
        )
    defaults = [
        (key, val, ops)
        for key, pairs in config.get("Defaults", {}).items()
        for val, ops in zip(pairs[::2], pairs[1::2], strict=True)
    ]
    out, missing = [], []
    for n in nodes:
        new = dict(n)
        for key, val, ops in defaults:
            if ops == "all" or n["op_type"] in ops:
                new[key] = val
        if n["name"] not in config:
            missing.append(n["name"])
        for key, val in config.get(n["name"], {}).items():
            sp = spec(n)
            if key in _FOLDING_ATTRS and key not in (*sp.config, *sp.fold):
                raise FoldingError(f"node {n['name']!r} ({n['op_type']}) has no attribute {key}")
            new[key] = val
        check_node(new, mvau_wwidth_max)
        out.append(new)
    if missing:
        log.info("No HW configuration for nodes: %s", ", ".join(missing))
    return out


def validate_folding(nodes: Sequence[FinnNode], *, mvau_wwidth_max: int | None = None) -> None:
    """Raise :class:`FoldingError` for the first node whose folding breaks FINN's rules.

    ``mvau_wwidth_max`` (FINN's SetFolding limit, 36) is only checked when given: FINN
    does not enforce it on hand-written configs (finn-examples' TFC uses SIMD 49 x 1 bit).
    """
    for n in nodes:
        check_node(n, mvau_wwidth_max)


# ----------------------------------------------------------------- SetFolding


def target_cycles(target_fps: float, clk_ns: float) -> int:
    """Cycles per frame for a target fps, as FINN: ``int(1e9 / clk_ns / target_fps)``.

    A quotient within float rounding (1e-12 relative) of an integer counts as that integer,
    so an fps hwbed reports (``1e9 / clk_ns / cycles``) gives back exactly ``cycles``.
    """
    if not (target_fps > 0 and clk_ns > 0 and math.isfinite(target_fps)):
        raise ValueError(f"target_fps and clk_ns must be positive, got {target_fps}, {clk_ns}")
    exact = 10**9 / clk_ns / target_fps
    near = round(exact)
    return near if abs(exact - near) <= 1e-12 * exact else int(exact)


def _raise_until(n: dict[str, Any], key: str, bound: int, target: int) -> None:
    """FINN's ``optimize_attribute_val``: step ``key`` through divisors of ``bound``."""
    for val in divisors(bound):
        n[key] = val
        if node_cycles(n) < target:
            return


def _fold_skipped(n: dict[str, Any], target: int) -> None:
    """Smallest parallelism of a node SetFolding skips that meets ``target`` (else its fastest)."""
    ((key, bound),) = spec(n).fold.items()
    best = None
    for val in divisors(attr(n, bound)):
        cycles = node_cycles({**n, key: val})
        if cycles <= target:
            n[key] = val
            return
        if best is None or cycles < best[0]:
            best = cycles, val
    n[key] = best[1]


def _set_folding_pass(
    nodes: Sequence[FinnNode], target: int, wwidth_max: int, fold_skipped: bool = False
) -> list[dict]:
    out = [dict(n) for n in nodes]
    producers = {t: n for n in out for t in n.get("output", ())}
    unhandled = []
    for n in out:
        op = n["op_type"]
        if op in _MVAU_OPS:
            n["PE"] = n["SIMD"] = 1
            wbits = bitwidth(attr(n, "weightDataType"))
            for simd in divisors(attr(n, "MW")):
                prev, n["SIMD"] = n["SIMD"], simd
                if node_cycles(n) < target:
                    break
                if wbits * simd > wwidth_max:
                    n["SIMD"] = prev
                    break
            _raise_until(n, "PE", attr(n, "MH"), target)
        elif op in _PE_OPS:
            _raise_until(n, "PE", attr(n, "NumChannels"), target)
        elif op == "LabelSelect_hls":
            _raise_until(n, "PE", attr(n, "Labels"), target)
        elif op == "Pool_hls":  # FINN: the pool's PE, then its depthwise window's SIMD = PE
            _raise_until(n, "PE", attr(n, "Channels"), target)
            window = producers.get(n["input"][0]) if n.get("input") else None
            if window is not None and window["op_type"] == "ConvolutionInputGenerator_rtl":
                window["SIMD"], window["parallel_window"] = n["PE"], 0
        elif op == "ConvolutionInputGenerator_rtl":
            if attr(n, "depthwise"):
                continue  # FINN folds depthwise SWGs from their VVAU/Pool consumer
            n["parallel_window"] = 0
            channels = attr(n, "IFMChannels")
            _raise_until(n, "SIMD", channels, target)
            if n["SIMD"] == channels and node_cycles(n) > target:
                n["parallel_window"] = 1
        elif op == "FMPadding_hls":  # FINN main leaves FMPadding_rtl alone
            _raise_until(n, "SIMD", attr(n, "NumChannels"), target)
        elif fold_skipped and op in _SKIPPED_BY_FINN:
            _fold_skipped(n, target)
        else:
            unhandled.append(op)
    for op in dict.fromkeys(unhandled):
        log.info("SetFolding doesn't know how to handle op_type %s", op)
    return out


def _max_cycles(nodes: Sequence[FinnNode]) -> tuple[int, str]:
    perf = network_performance(nodes, 1.0)
    return perf["max_cycles"], perf["max_cycles_node_name"]


def set_folding(
    nodes: Sequence[FinnNode],
    target_cycles_per_frame: int,
    *,
    mvau_wwidth_max: int = 36,
    two_pass_relaxation: bool = True,
) -> list[dict[str, Any]]:
    """FINN's ``SetFolding``: per node, raise parallelism over divisors until cycles < target.

    MVAUs reset PE=SIMD=1, raise SIMD through divisors of MW (stepping back once
    SIMD x weight bits exceeds ``mvau_wwidth_max``), then PE through divisors of MH.
    PE ops go up to NumChannels (LabelSelect: Labels); SWGs raise SIMD to IFMChannels and
    then set ``parallel_window``. With two-pass relaxation, a missed target re-runs the
    search with the achieved bottleneck cycles as target to balance the pipeline.
    """
    out = _set_folding_pass(nodes, target_cycles_per_frame, mvau_wwidth_max)
    achieved, _ = _max_cycles(out)
    if two_pass_relaxation and achieved > target_cycles_per_frame:
        out = _set_folding_pass(nodes, achieved, mvau_wwidth_max)
    return out


def fold_for_fps(
    nodes: Sequence[FinnNode],
    target_fps: float,
    clk_ns: float,
    *,
    board: Board | None = None,
    utilization: float | Mapping[str, float] = 1.0,
    mvau_wwidth_max: int = 36,
) -> list[dict[str, Any]]:
    """A folding reaching ``target_fps`` at ``clk_ns`` (and fitting ``board`` when given).

    First one SetFolding pass, which also folds the ops FINN main's SetFolding skips
    (StreamingMaxPool, FMPadding_rtl, DownSampler, ChannelPad) just enough for the target.
    With a board, a result that misses the target or does not fit is replaced by the
    budget-aware search of :func:`fold_to_fit` stopped at the target: every fps the fastest
    fitting folding reaches is accepted. When nothing fits the board even fully folded, the
    SetFolding result is returned if it meets the target (the caller reports the overrun).
    Raises :class:`InfeasibleTargetError` with the required and achievable cycles otherwise.
    """
    required = target_cycles(target_fps, clk_ns)
    out = _set_folding_pass(nodes, required, mvau_wwidth_max, fold_skipped=True)
    achieved, bottleneck = _max_cycles(out)
    meets = achieved <= required
    where = f"target {target_fps:g} fps at {clk_ns:g} ns needs <= {required} cycles per frame"
    fit = None
    if board is not None:
        budget = _budget(board, utilization)
        total = _totals(out, board.part)
        if meets and _fits(total, budget):
            return out
        try:
            fit = _fit_search(nodes, board, utilization, mvau_wwidth_max, required)
        except BudgetExceededError:
            pass  # nothing fits: like no board, the estimate step reports the overrun
    if fit is None:
        if meets:
            return out
        raise InfeasibleTargetError(
            required,
            achieved,
            bottleneck,
            f"{where}, but the best folding reaches {achieved} cycles "
            f"({1e9 / clk_ns / achieved:.1f} fps), limited by {bottleneck} "
            f"(mvau_wwidth_max={mvau_wwidth_max})",
        )
    best, best_node = _max_cycles(fit)
    if best <= required:
        return fit
    note = f"; SetFolding reaches it but needs {_overrun(total, budget)}" if meets else ""
    raise InfeasibleTargetError(
        required,
        best,
        best_node,
        f"{where}, but the fastest folding that fits {board.name} reaches {best} cycles "
        f"({1e9 / clk_ns / best:.1f} fps), limited by {best_node}{note}",
    )


# ---------------------------------------------------------------- fit to a board


def _options(n: FinnNode, wwidth_max: int) -> list[dict[str, Any]]:
    """Legal parallelism settings of a node (a single ``{}`` when it has none)."""
    sp = spec(n)
    if n["op_type"] in _MVAU_OPS:
        wbits = bitwidth(attr(n, "weightDataType"))
        return [
            {"SIMD": s, "PE": p}
            for s in divisors(attr(n, "MW"))
            if s == 1 or s * wbits <= wwidth_max
            for p in divisors(attr(n, "MH"))
        ]
    if n["op_type"] == "ConvolutionInputGenerator_rtl":
        channels = attr(n, "IFMChannels")
        if attr(n, "depthwise"):  # a pool's window: SIMD only (FINN ties it to the pool's PE)
            return [{"SIMD": s, "parallel_window": 0} for s in divisors(channels)]
        opts = [{"SIMD": s, "parallel_window": 0} for s in divisors(channels)]
        return opts + [{"SIMD": channels, "parallel_window": 1}]
    if not sp.fold:
        return [{}]
    ((key, bound),) = sp.fold.items()
    return [{key: v} for v in divisors(attr(n, bound))]


def _fits(total: Mapping[str, float], budget: Mapping[str, float]) -> bool:
    return all(total[k] <= budget[k] for k in RESOURCE_KEYS)


def _budget(board: Board, utilization: float | Mapping[str, float]) -> dict[str, float]:
    if isinstance(utilization, Mapping):
        frac = utilization
    else:
        frac = dict.fromkeys(RESOURCE_KEYS, utilization)
    return {k: board.budget()[k] * frac.get(k, 1.0) for k in RESOURCE_KEYS}


def _totals(nodes: Sequence[FinnNode], part: str) -> dict[str, float]:
    return {k: sum(float(node_resources(n, part)[k]) for n in nodes) for k in RESOURCE_KEYS}


def _overrun(total: Mapping[str, float], budget: Mapping[str, float]) -> str:
    return ", ".join(
        f"{k} {total[k]:g} > {budget[k]:g}" for k in RESOURCE_KEYS if total[k] > budget[k]
    )


def _cost(res: Mapping[str, float], budget: Mapping[str, float]) -> float:
    """Budget-normalised resource use, for ranking equally fast options."""
    return sum(res[k] / budget[k] if budget[k] else res[k] * 1e9 for k in RESOURCE_KEYS)


def fold_to_fit(
    nodes: Sequence[FinnNode],
    board: Board,
    *,
    utilization: float | Mapping[str, float] = 1.0,
    mvau_wwidth_max: int = 36,
) -> list[dict[str, Any]]:
    """Fastest folding (lowest max cycles) whose estimate fits ``board``'s budget.

    Starts fully folded (each node's cheapest setting, normally PE = SIMD = 1), then
    repeatedly speeds up the bottleneck node by the smallest step that keeps the network
    total within budget, and stops when the bottleneck cannot be sped up within budget.
    Finally every node is relaxed to its cheapest setting no slower than the bottleneck.
    ``utilization`` scales the budget (a fraction, or one per key of ``BRAM_18K``, ``LUT``,
    ``URAM``, ``DSP``).
    Raises :class:`BudgetExceededError` (carrying that cheapest folding) if the fully folded
    network does not fit.
    """
    return _fit_search(nodes, board, utilization, mvau_wwidth_max, None)


def _fit_search(
    nodes: Sequence[FinnNode],
    board: Board,
    utilization: float | Mapping[str, float],
    mvau_wwidth_max: int,
    target: int | None,
) -> list[dict[str, Any]]:
    """:func:`fold_to_fit`'s greedy search, stopped once max cycles <= ``target`` if given.

    The greedy steps are the same with or without a target, so any target at or above the
    untargeted result's max cycles is reached; the relaxation then uses the target as bound.
    """
    budget = _budget(board, utilization)
    part = board.part
    # per node: its options as (cycles, resources, attribute update)
    table = []
    for n in nodes:
        entries = []
        for opt in _options(n, mvau_wwidth_max):
            trial = {**n, **opt}
            entries.append((node_cycles(trial), node_resources(trial, part), opt))
        table.append(entries)
    # start from each node's cheapest option (the slowest one among equally cheap ones)
    choice = [
        min(range(len(t)), key=lambda j, t=t: (_cost(t[j][1], budget), -t[j][0])) for t in table
    ]
    total = {
        k: sum(float(t[c][1][k]) for t, c in zip(table, choice, strict=True)) for k in RESOURCE_KEYS
    }

    def folded() -> list[dict[str, Any]]:
        return [{**n, **t[c][2]} for n, t, c in zip(nodes, table, choice, strict=True)]

    if not _fits(total, budget):
        raise BudgetExceededError(
            total,
            budget,
            f"network does not fit {board.name} even fully folded (cheapest folding of every "
            f"layer): needs {_overrun(total, budget)}",
            folded(),
        )

    def swap(i: int, j: int) -> dict[str, float]:
        old, new = table[i][choice[i]][1], table[i][j][1]
        return {k: total[k] - old[k] + new[k] for k in RESOURCE_KEYS}

    while True:
        cycles = [t[c][0] for t, c in zip(table, choice, strict=True)]
        if target is not None and max(cycles) <= target:
            break
        b = cycles.index(max(cycles))
        faster = [j for j, e in enumerate(table[b]) if e[0] < cycles[b]]
        faster.sort(key=lambda j: (-table[b][j][0], _cost(table[b][j][1], budget)))
        step = next((j for j in faster if _fits(swap(b, j), budget)), None)
        if step is None:
            break
        total, choice[b] = swap(b, step), step
    bound = max(t[c][0] for t, c in zip(table, choice, strict=True))
    if target is not None and bound <= target:
        bound = target
    for i, t in enumerate(table):
        for j in sorted(range(len(t)), key=lambda j, t=t: _cost(t[j][1], budget)):
            if t[j][0] <= bound and _fits(swap(i, j), budget):
                total, choice[i] = swap(i, j), j
                break
    return folded()
