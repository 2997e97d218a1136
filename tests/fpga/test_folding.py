"""Folding configs (FINN ApplyConfig semantics), validation, SetFolding and fit-to-board."""

import json
import logging
import random
import warnings

import pytest

from hwbed.fpga.finn.boards import get_board
from hwbed.fpga.finn.estimates import layer_cycles, layer_resources, network_performance
from hwbed.fpga.finn.folding import (
    BudgetExceededError,
    FoldingError,
    InfeasibleTargetError,
    apply_folding_config,
    check_folding_file,
    extract_folding_config,
    fold_for_fps,
    fold_to_fit,
    load_folding_config,
    save_folding_config,
    set_folding,
    target_cycles,
    validate_folding,
)
from hwbed.fpga.finn.op_specs import attr, spec

EXAMPLES = ["cnv-w1a1", "cnv-w2a2", "tfc-w1a1", "tfc-w2a2"]


def quiet(fn, *args, **kw):
    """Run ``fn`` ignoring FINN-style warnings (unconfigured or unfoldable nodes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def assert_divisible(nodes):
    for n in nodes:
        for par, bound in spec(n).fold.items():
            assert attr(n, bound) % attr(n, par) == 0, (n["name"], par)


@pytest.mark.parametrize("example", EXAMPLES)
def test_finn_examples_configs_apply_unchanged(finn_example, tmp_path, example):
    nodes, config = finn_example(example)
    path = tmp_path / "folding.json"
    save_folding_config(config, path)
    assert load_folding_config(path) == config
    folded = quiet(apply_folding_config, nodes, path)
    by_name = {n["name"]: n for n in folded}
    for name, values in config.items():
        if name != "Defaults":
            for key, value in values.items():
                assert by_name[name][key] == value
    validate_folding(folded)
    assert nodes == finn_example(example)[0]  # inputs untouched
    # extracting the applied config gives back every value the file set
    extracted = extract_folding_config(folded)
    for name, values in config.items():
        assert values.items() <= extracted[name].items()


def test_unconfigured_nodes_are_logged_like_finn_not_warned(finn_example, caplog):
    nodes, config = finn_example("cnv-w1a1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings module noise in a normal run
        with caplog.at_level(logging.INFO, logger="hwbed.fpga.finn.folding"):
            apply_folding_config(nodes, config)
    (rec,) = [r for r in caplog.records if r.name == "hwbed.fpga.finn.folding"]
    assert rec.levelno == logging.INFO
    assert rec.getMessage() == (
        "No HW configuration for nodes: StreamingMaxPool_hls_0, StreamingMaxPool_hls_1"
    )


def test_set_folding_logs_ops_it_skips(finn_example, caplog):
    nodes, _ = finn_example("tfc-w1a1")
    dwc = {
        "name": "StreamingDataWidthConverter_hls_0",
        "op_type": "StreamingDataWidthConverter_hls",
        "shape": [1, 64],
        "inWidth": 64,
        "outWidth": 8,
        "dataType": "BINARY",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.INFO, logger="hwbed.fpga.finn.folding"):
            set_folding([*nodes, dwc], 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "SetFolding doesn't know how to handle op_type StreamingDataWidthConverter_hls"
    ]


def test_unknown_node_names_are_an_error(finn_example):
    nodes, config = finn_example("tfc-w1a1")
    config["MVA_hls_3"] = {"PE": 2}  # the misspelling in FINN's own example config
    with pytest.raises(FoldingError, match="not in the network: MVA_hls_3"):
        apply_folding_config(nodes, config)


def test_defaults_then_node_entries(finn_example):
    nodes, _ = finn_example("tfc-w1a1")
    config = {
        "Defaults": {"ram_style": ["distributed", ["MVAU_hls"]], "PE": [2, ["LabelSelect_hls"]]},
        "MVAU_hls_0": {"ram_style": "block"},
    }
    folded = quiet(apply_folding_config, nodes, config)
    styles = {n["name"]: n.get("ram_style") for n in folded}
    assert styles == {
        "Thresholding_rtl_0": None,
        "MVAU_hls_0": "block",
        "MVAU_hls_1": "distributed",
        "MVAU_hls_2": "distributed",
        "MVAU_hls_3": "distributed",
        "LabelSelect_hls_0": None,
    }
    assert folded[-1]["PE"] == 2
    everywhere = quiet(
        apply_folding_config, nodes, {"Defaults": {"mem_mode": ["internal_decoupled", "all"]}}
    )
    assert all(n["mem_mode"] == "internal_decoupled" for n in everywhere)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"Defaults": {"PE": 2}}, r"Defaults\['PE'\] must be"),
        ({"Defaults": {"PE": [2, "all", 4, "all"]}}, "'all' must be the only"),
        ({"MVAU_hls_0": 3}, "must be an object"),
        ({"MVAU_hls_0": {"SIMD": 48}}, "MVAU_hls_0.*MW=784 is not divisible by SIMD=48"),
        ({"MVAU_hls_1": {"PE": 0}}, "PE=0 must be a positive integer"),
        ({"MVAU_hls_1": {"ram_style": "bram"}}, "ram_style='bram' not one of"),
        ({"LabelSelect_hls_0": {"PE": 3}}, "Labels=10 is not divisible by PE=3"),
        ({"Thresholding_rtl_0": {"SIMD": 2}}, "Thresholding_rtl_0.*has no attribute SIMD"),
    ],
)
def test_bad_configs_name_node_attribute_and_numbers(finn_example, config, message):
    nodes, _ = finn_example("tfc-w1a1")
    with pytest.raises(FoldingError, match=message):
        quiet(apply_folding_config, nodes, config)


def test_weight_width_limit_is_opt_in(finn_example):
    nodes, config = finn_example("tfc-w1a1")
    folded = quiet(apply_folding_config, nodes, config)
    # finn-examples' TFC streams 49 x 1-bit weights per PE, above SetFolding's default 36
    with pytest.raises(
        FoldingError,
        match=r"SIMD=49 x weight bits 1 = 49 exceeds "
        r"mvau_wwidth_max=36",
    ):
        validate_folding(folded, mvau_wwidth_max=36)
    validate_folding(folded, mvau_wwidth_max=64)


def test_swg_parallel_window_rule(finn_example):
    nodes, _ = finn_example("cnv-w1a1")
    with pytest.raises(FoldingError, match="SIMD=32, IFMChannels=64"):
        quiet(
            apply_folding_config,
            nodes,
            {"ConvolutionInputGenerator_rtl_1": {"SIMD": 32, "parallel_window": 1}},
        )


def test_target_cycles_like_finn():
    assert target_cycles(100000, 10.0) == 1000
    assert target_cycles(3, 10.0) == 33333333  # int() truncates
    with pytest.raises(ValueError, match="must be positive"):
        target_cycles(0, 10.0)


@pytest.mark.parametrize("example", EXAMPLES)
@pytest.mark.parametrize("fps", [1_000, 20_000, 300_000])
def test_set_folding_meets_reachable_targets(finn_example, example, fps):
    nodes, _ = finn_example(example)
    target = target_cycles(fps, 5.0)
    folded = quiet(set_folding, nodes, target)
    assert_divisible(folded)
    validate_folding(folded)
    cycles = layer_cycles(folded)
    best = layer_cycles(quiet(set_folding, nodes, 1, two_pass_relaxation=False))
    if max(best.values()) <= target:
        assert max(cycles.values()) <= target
        # every layer SetFolding folds is just fast enough: cycles < target
        for n in folded:
            if spec(n).fold and n["op_type"] != "StreamingMaxPool_hls":
                assert cycles[n["name"]] < target or cycles[n["name"]] == best[n["name"]]
    else:  # relaxed to the bottleneck
        assert max(cycles.values()) == max(best.values())


def test_set_folding_tfc_by_hand(finn_example):
    nodes, _ = finn_example("tfc-w1a1")
    folded = quiet(set_folding, nodes, 100)
    by = {n["name"]: n for n in folded}
    # MVAU_hls_0 (784x64): SIMD 1, 2, 4, 7, 8 gives 64*784/8 = 6272 >= 100; SIMD 14 -> 3584,
    # 16 -> 3136, 28 -> 1792 and 49 breaks 36 bits, so SIMD stays 28; PE then needs
    # 64/PE * 28 < 100 -> PE = 32 (56 cycles)
    assert (by["MVAU_hls_0"]["SIMD"], by["MVAU_hls_0"]["PE"]) == (28, 32)
    # MVAU_hls_1 (64x64): SIMD 32 -> 128 cycles; SIMD 64 -> 64 < 100 ends the loop before
    # the width check, so (as in FINN) SIMD 64 x 1 bit passes the 36-bit limit, PE stays 1
    assert (by["MVAU_hls_1"]["SIMD"], by["MVAU_hls_1"]["PE"]) == (64, 1)
    # Thresholding 784 channels: PE 8 -> 98 < 100
    assert by["Thresholding_rtl_0"]["PE"] == 8
    assert by["LabelSelect_hls_0"]["PE"] == 1  # 10 cycles already


def test_fold_for_fps_refuses_impossible_target(finn_example):
    nodes, _ = finn_example("tfc-w1a1")
    # 5 Mfps at 100 MHz needs 20 cycles; MVAU_hls_0 bottoms out at SIMD 28, PE 64: 28 cycles
    with pytest.raises(InfeasibleTargetError, match="needs <= 20 cycles.*reaches 28 cycles") as e:
        fold_for_fps(nodes, 5_000_000, 10.0)
    assert (e.value.required_cycles, e.value.achievable_cycles) == (20, 28)
    assert e.value.bottleneck == "MVAU_hls_0"
    ok = fold_for_fps(nodes, 1_000_000, 10.0)  # 100 cycles
    assert network_performance(ok, 10.0)["estimated_throughput_fps"] >= 1_000_000
    # FINN's two-pass relaxation balances the pipeline at the reachable 28 cycles instead
    relaxed = quiet(set_folding, nodes, 20)
    assert max(layer_cycles(relaxed).values()) == 28


@pytest.mark.parametrize("example", EXAMPLES)
def test_fold_to_fit_fits_and_beats_fully_folded(finn_example, example):
    nodes, _ = finn_example(example)
    board = get_board("pynq-z2")
    folded = quiet(fold_to_fit, nodes, board)
    assert_divisible(folded)
    validate_folding(folded, mvau_wwidth_max=36)
    total = layer_resources(folded, board.part)["total"]
    assert all(total[k] <= v for k, v in board.budget().items())
    fps = network_performance(folded, board.clk_ns)["estimated_throughput_fps"]
    assert fps > network_performance(nodes, board.clk_ns)["estimated_throughput_fps"]
    # a tighter budget never gives a faster result
    half = quiet(fold_to_fit, nodes, board, utilization=0.75)
    total = layer_resources(half, board.part)["total"]
    assert all(total[k] <= 0.75 * v for k, v in board.budget().items())
    assert network_performance(half, board.clk_ns)["estimated_throughput_fps"] <= fps


def test_fold_to_fit_stops_at_the_fastest_bottleneck(finn_example):
    nodes, _ = finn_example("cnv-w1a1")
    u250 = get_board("u250")
    # with a U250's budget CNV is limited by MVAU_hls_1 (576 x 64 on 28x28 pixels): SIMD is
    # capped at 36 (the largest divisor of 576 within 36 bits), PE = 64: 576/36 * 784 cycles
    perf = network_performance(quiet(fold_to_fit, nodes, u250), 5.0)
    assert (perf["max_cycles"], perf["max_cycles_node_name"]) == (16 * 784, "MVAU_hls_1")
    # without that cap the first SWG in parallel-window mode is the floor: 32*32*1 + 2
    folded = quiet(fold_to_fit, nodes, u250, mvau_wwidth_max=4096)
    perf = network_performance(folded, 5.0)
    assert perf["max_cycles"] == 1026
    assert perf["max_cycles_node_name"] == "ConvolutionInputGenerator_rtl_0"
    # every other layer is relaxed to its cheapest setting within that bound
    assert folded[-1]["PE"] == 1 and 900 <= layer_cycles(folded)["MVAU_hls_0"] <= 1026


def test_fold_to_fit_refuses_network_that_cannot_fit(finn_example):
    nodes, _ = finn_example("cnv-w1a1")
    board = get_board("pynq-z2")
    with pytest.raises(
        BudgetExceededError, match="does not fit pynq-z2 even fully folded.*LUT [0-9]+ > 532"
    ) as e:
        fold_to_fit(nodes, board, utilization=0.01)
    assert e.value.budget["LUT"] == pytest.approx(532)
    assert e.value.needed["LUT"] > 532


def test_saved_auto_config_round_trips(finn_example, tmp_path):
    nodes, _ = finn_example("cnv-w2a2")
    folded = quiet(set_folding, nodes, 50_000)
    path = tmp_path / "auto_folding_config.json"
    save_folding_config(extract_folding_config(folded), path)
    assert json.loads(path.read_text())["Defaults"] == {}
    again = quiet(apply_folding_config, nodes, path)
    assert layer_cycles(again) == layer_cycles(folded)


# ------------------------------------------------- target search vs fastest that fits


@pytest.fixture(scope="module")
def resnet20_xnor():
    """resnet20-xnor's hardware nodes (random calibrated weights, digits 8x8 input)."""
    pytest.importorskip("sklearn")
    from hwbed.fpga.build.flow import BuildConfig, _calibrated_random
    from hwbed.fpga.finn.nodes import finn_nodes
    from hwbed.fpga.lowering.lower import lower

    model, shape, _ = quiet(
        _calibrated_random, BuildConfig(model="resnet20-xnor", weights="random")
    )
    return finn_nodes(quiet(lower, model, "resnet20-xnor", shape))


def _network(name, request):
    if name == "resnet20-xnor":
        return request.getfixturevalue("resnet20_xnor")
    return request.getfixturevalue("finn_example")(name)[0]


def _fps(nodes, board):
    return network_performance(nodes, board.clk_ns)["estimated_throughput_fps"]


def _fits_board(nodes, board):
    total = layer_resources(nodes, board.part)["total"]
    return all(total[k] <= v for k, v in board.budget().items())


@pytest.mark.parametrize("board_name", ["pynq-z2", "ultra96", "zcu104", "kv260", "u250"])
@pytest.mark.parametrize("example", ["resnet20-xnor", "cnv-w1a1", "tfc-w1a1"])
def test_every_fps_the_fastest_fitting_folding_reaches_is_a_valid_target(
    example, board_name, request
):
    nodes, board = _network(example, request), get_board(board_name)
    try:
        fastest = _fps(fold_to_fit(nodes, board), board)
    except BudgetExceededError:
        pytest.skip(f"{example} does not fit {board_name} at all")
    rng = random.Random(f"{example}/{board_name}")
    targets = [fastest, 0.9 * fastest, 0.5 * fastest, fastest * (1 - 1e-9)]
    targets += [rng.uniform(0.01, 1.0) * fastest for _ in range(4)]
    for target in targets:
        folded = fold_for_fps(nodes, target, board.clk_ns, board=board)
        # fps >= target up to float noise in the target (0.9 x fastest can land 1 ulp above
        # the fps of the cycle count it means; target_cycles rounds such noise away)
        assert _fps(folded, board) >= target * (1 - 1e-12), (target, fastest)
        assert max(layer_cycles(folded).values()) <= target_cycles(target, board.clk_ns)
        assert _fits_board(folded, board), target
        assert_divisible(folded)
        validate_folding(folded)


def test_resnet20_xnor_targets_between_setfolding_and_fastest_are_met(resnet20_xnor):
    # the issue: SetFolding left FMPadding_rtl (16 channels, 10x10 padded: 1600 cycles) at
    # SIMD 1, so every target above 62,500 fps was refused while the fastest folding that
    # fits pynq-z2 reaches ~97,656 fps
    board = get_board("pynq-z2")
    pads = [n for n in resnet20_xnor if n["op_type"] == "FMPadding_rtl"]
    assert max(layer_cycles(pads).values()) == 1600
    fastest = _fps(fold_to_fit(resnet20_xnor, board), board)
    assert fastest > 90_000
    for target in (70_000, 90_000):
        folded = fold_for_fps(resnet20_xnor, target, board.clk_ns, board=board)
        assert _fps(folded, board) >= target and _fits_board(folded, board)
    # FINN's SetFolding itself still skips FMPadding_rtl
    plain = quiet(set_folding, resnet20_xnor, target_cycles(70_000, board.clk_ns))
    assert max(layer_cycles(plain).values()) == 1600


def test_target_above_the_fastest_fitting_folding_says_what_limits_it(resnet20_xnor):
    board = get_board("pynq-z2")
    best = fold_to_fit(resnet20_xnor, board)
    perf = network_performance(best, board.clk_ns)
    cycles = perf["max_cycles"]
    with pytest.raises(InfeasibleTargetError) as e:
        fold_for_fps(resnet20_xnor, 1e9 / board.clk_ns / (cycles - 1), board.clk_ns, board=board)
    assert (e.value.required_cycles, e.value.achievable_cycles) == (cycles - 1, cycles)
    assert e.value.bottleneck == perf["max_cycles_node_name"]
    assert f"the fastest folding that fits pynq-z2 reaches {cycles} cycles" in str(e.value)
    # SetFolding alone is faster there, but over budget: the message says by what
    assert "SetFolding reaches it but needs LUT" in str(e.value)


def test_target_search_prefers_setfolding_when_it_fits(finn_example):
    nodes, _ = finn_example("tfc-w1a1")
    board = get_board("u250")
    target = 1_000_000
    plain = fold_for_fps(nodes, target, board.clk_ns)
    assert fold_for_fps(nodes, target, board.clk_ns, board=board) == plain


def test_target_search_on_a_board_nothing_fits_keeps_setfolding(finn_example):
    nodes, _ = finn_example("cnv-w1a1")
    board = get_board("pynq-z2")
    folded = fold_for_fps(nodes, 100, board.clk_ns, board=board, utilization=0.01)
    assert folded == fold_for_fps(nodes, 100, board.clk_ns)


def test_target_cycles_of_a_reported_fps_round_trip():
    for clk_ns in (10.0, 5.0, 3.3, 4.0):
        for cycles in (1, 3, 7, 1024, 1025, 99_999, 123_457):
            fps = 1e9 / clk_ns / cycles
            assert target_cycles(fps, clk_ns) == cycles
            assert target_cycles(fps * (1 + 1e-9), clk_ns) == cycles - 1 or cycles == 1


def test_budget_error_carries_the_cheapest_folding(finn_example):
    nodes, _ = finn_example("cnv-w1a1")
    with pytest.raises(BudgetExceededError) as e:
        fold_to_fit(nodes, get_board("pynq-z2"), utilization=0.01)
    cheapest = e.value.folding
    assert [n["name"] for n in cheapest] == [n["name"] for n in nodes]
    total = layer_resources(cheapest, "xc7z020clg400-1")["total"]
    assert {k: total[k] for k in e.value.needed} == pytest.approx(e.value.needed)


# ----------------------------------------------------------- folding files up front


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"folding config .*f\.json does not exist"),
        ('{"MVAU_hls_0": {"PE": 2},', r"folding config .*f\.json is not valid JSON: Expecting"),
        ("[1, 2]", r"f\.json: folding config must be a JSON object"),
        ('{"MVA_hls_3": {"PE": 2}}', r"f\.json: node name 'MVA_hls_3' is not <op type>_<index>"),
        ('{"MVAU_hls_0": {"PEE": 2}}', r"node 'MVAU_hls_0' has no folding attribute 'PEE'"),
        ('{"MVAU_hls_0": {"PE": "2"}}', r"MVAU_hls_0\.PE='2' must be a positive integer"),
        ('{"MVAU_hls_0": {"ram_style": "bram"}}', r"ram_style='bram' not one of auto"),
        ('{"Defaults": {"PE": [2, ["MVAU"]]}}', r"Defaults\['PE'\] names unknown op types MVAU"),
        ('{"Defaults": {"depth": [2, "all"]}}', r"Defaults\['depth'\] is not a folding attr"),
    ],
)
def test_folding_file_checked_without_the_network(tmp_path, text, message):
    path = tmp_path / "f.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(FoldingError, match=message):
        check_folding_file(path)


def test_folding_files_hwbed_writes_pass_the_check(finn_example, finn_examples_dir, tmp_path):
    for example in EXAMPLES:
        check_folding_file(finn_examples_dir / f"{example}_folding_config.json")
    nodes, _ = finn_example("cnv-w2a2")
    path = tmp_path / "auto.json"
    save_folding_config(extract_folding_config(quiet(set_folding, nodes, 5000)), path)
    assert check_folding_file(path) == load_folding_config(path)
    head = {"Affine_hls_0": {"PE": 2, "ram_style": "distributed"}}  # hwbed's float head
    path.write_text(json.dumps(head))
    assert check_folding_file(path) == head
