"""FPGA targets: FINN board strings, parts, resource budgets, DMA widths and default clocks.

Sources: FINN ``src/finn/util/basic.py`` (``pynq_part_map``, ``alveo_part_map``,
``pynq_native_port_width``, ``get_dsp_block``; ``VitisBuild`` inserts 512-bit IODMAs),
Xilinx product tables (DS190 Zynq-7000, DS891 Zynq UltraScale+, DS987 K26, DS962 Alveo U250) for
the full-device LUT/FF/BRAM18/URAM/DSP counts, and finn-examples ``build/*/build.py`` for clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Resource keys FINN's estimate reports use, in report order (FINN has no FF estimate).
RESOURCE_KEYS = ("BRAM_18K", "LUT", "URAM", "DSP")


@dataclass(frozen=True)
class Board:
    """One target: FINN names, device and the analytical budget."""

    name: str
    finn_board: str
    part: str
    shell_flow_type: str
    dma_width_bits: int
    clk_ns: float
    lut: int
    ff: int
    bram18: int
    uram: int
    dsp: int

    @property
    def dsp_type(self) -> str:
        """DSP slice family of the part (DSP48E1, DSP48E2 or DSP58)."""
        return dsp_block(self.part)

    @property
    def clk_mhz(self) -> float:
        """Default clock in MHz."""
        return 1000.0 / self.clk_ns

    def budget(self) -> dict[str, int]:
        """Resource budget keyed like FINN's ``estimate_layer_resources.json``."""
        return {"BRAM_18K": self.bram18, "LUT": self.lut, "URAM": self.uram, "DSP": self.dsp}


def dsp_block(part: str) -> str:
    """FINN's ``get_dsp_block``: Versal parts give DSP58, 7-series DSP48E1, others DSP48E2."""
    if part[:4] in ("xcvc", "xcve", "xcvp", "xcvm", "xqvc", "xqvm") or part[:5] == "xqrvc":
        return "DSP58"
    if part[2] == "7":
        return "DSP48E1"
    return "DSP48E2"


_Z7020 = dict(part="xc7z020clg400-1", lut=53200, ff=106400, bram18=280, uram=0, dsp=220)
_ZU3EG = dict(lut=70560, ff=141120, bram18=432, uram=0, dsp=360)

BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board(
            "pynq-z1",
            "Pynq-Z1",
            shell_flow_type="vivado_zynq",
            dma_width_bits=64,
            clk_ns=10.0,
            **_Z7020,
        ),
        Board(
            "pynq-z2",
            "Pynq-Z2",
            shell_flow_type="vivado_zynq",
            dma_width_bits=64,
            clk_ns=10.0,
            **_Z7020,
        ),
        Board(
            "ultra96",
            "Ultra96",
            part="xczu3eg-sbva484-1-e",
            shell_flow_type="vivado_zynq",
            dma_width_bits=128,
            clk_ns=5.0,
            **_ZU3EG,
        ),
        Board(
            "ultra96-v2",
            "Ultra96-V2",
            part="xczu3eg-sbva484-1-i",
            shell_flow_type="vivado_zynq",
            dma_width_bits=128,
            clk_ns=5.0,
            **_ZU3EG,
        ),
        Board(
            "zcu102",
            "ZCU102",
            part="xczu9eg-ffvb1156-2-e",
            shell_flow_type="vivado_zynq",
            dma_width_bits=128,
            clk_ns=5.0,
            lut=274080,
            ff=548160,
            bram18=1824,
            uram=0,
            dsp=2520,
        ),
        Board(
            "zcu104",
            "ZCU104",
            part="xczu7ev-ffvc1156-2-e",
            shell_flow_type="vivado_zynq",
            dma_width_bits=128,
            clk_ns=5.0,
            lut=230400,
            ff=460800,
            bram18=624,
            uram=96,
            dsp=1728,
        ),
        Board(
            "kv260",
            "KV260_SOM",
            part="xck26-sfvc784-2LV-c",
            shell_flow_type="vivado_zynq",
            dma_width_bits=128,
            clk_ns=5.0,
            lut=117120,
            ff=234240,
            bram18=288,
            uram=64,
            dsp=1248,
        ),
        Board(
            "u250",
            "U250",
            part="xcu250-figd2104-2L-e",
            shell_flow_type="vitis_alveo",
            dma_width_bits=512,
            clk_ns=5.0,
            lut=1728000,
            ff=3456000,
            bram18=5376,
            uram=1280,
            dsp=12288,
        ),
    )
}


def get_board(name: str) -> Board:
    """Look a target up by hwbed name (``pynq-z2``) or FINN board string (``Pynq-Z2``)."""
    key = name.strip().lower()
    for board in BOARDS.values():
        if key in (board.name, board.finn_board.lower()):
            return board
    raise ValueError(f"unknown target {name!r}; known targets: {', '.join(BOARDS)}")
