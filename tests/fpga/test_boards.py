"""Board table: FINN names and parts, budgets, DSP families, lookup errors."""

import pytest

from hwbed.fpga.finn.boards import BOARDS, RESOURCE_KEYS, dsp_block, get_board


@pytest.mark.parametrize(
    ("name", "finn", "part", "dsp", "dma", "shell"),
    [
        ("pynq-z1", "Pynq-Z1", "xc7z020clg400-1", "DSP48E1", 64, "vivado_zynq"),
        ("pynq-z2", "Pynq-Z2", "xc7z020clg400-1", "DSP48E1", 64, "vivado_zynq"),
        ("ultra96", "Ultra96", "xczu3eg-sbva484-1-e", "DSP48E2", 128, "vivado_zynq"),
        ("ultra96-v2", "Ultra96-V2", "xczu3eg-sbva484-1-i", "DSP48E2", 128, "vivado_zynq"),
        ("zcu102", "ZCU102", "xczu9eg-ffvb1156-2-e", "DSP48E2", 128, "vivado_zynq"),
        ("zcu104", "ZCU104", "xczu7ev-ffvc1156-2-e", "DSP48E2", 128, "vivado_zynq"),
        ("kv260", "KV260_SOM", "xck26-sfvc784-2LV-c", "DSP48E2", 128, "vivado_zynq"),
        ("u250", "U250", "xcu250-figd2104-2L-e", "DSP48E2", 512, "vitis_alveo"),
    ],
)
def test_finn_names_parts_and_ports(name, finn, part, dsp, dma, shell):
    board = get_board(name)
    assert (board.finn_board, board.part, board.dsp_type) == (finn, part, dsp)
    assert (board.dma_width_bits, board.shell_flow_type) == (dma, shell)
    assert get_board(finn) is board  # FINN's board string works too


def test_pynq_z2_budget_matches_finn_platform():
    board = get_board("Pynq-Z2")
    # FINN Zynq7020_Platform: LUT 53,200; FF 106,400; BRAM_18K 280; URAM 0; DSP 220
    assert board.budget() == {"BRAM_18K": 280, "LUT": 53200, "URAM": 0, "DSP": 220}
    assert board.ff == 106400
    assert (board.clk_ns, board.clk_mhz) == (10.0, 100.0)


def test_every_board_has_a_positive_budget():
    for board in BOARDS.values():
        budget = board.budget()
        assert tuple(budget) == RESOURCE_KEYS
        assert budget["LUT"] > 0 and budget["BRAM_18K"] > 0 and budget["DSP"] > 0
        assert board.ff == 2 * board.lut  # every listed device has 2 FFs per LUT
        assert board.clk_ns > 0


def test_dsp_block_rules():
    assert dsp_block("xc7z020clg400-1") == "DSP48E1"
    assert dsp_block("xcve2802-vsvh1760-2MP-e-S") == "DSP58"
    assert dsp_block("xcu280-fsvh2892-2L-e") == "DSP48E2"


def test_unknown_target_lists_known_ones():
    with pytest.raises(ValueError, match="unknown target 'de10-nano'") as err:
        get_board("de10-nano")
    for name in ("pynq-z1", "pynq-z2", "ultra96-v2", "zcu104", "kv260", "u250"):
        assert name in str(err.value)
