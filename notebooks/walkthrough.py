# %% [markdown]
# # hwbed walk-through: from a Brevitas twin to a bit-exact hardware executable
#
# Runnable as a script (`python notebooks/walkthrough.py`) or cell by cell in any editor that
# understands `# %%` cells (VS Code, Jupytext). Uses the embedded digits data; about a minute.

# %%
import numpy as np
import torch

from hwbed.fpga.lowering.lower import lower_checkpoint
from hwbed.ir.reference import execute
from hwbed.models.checkpoint import load_checkpoint
from hwbed.models.cost import model_cost
from hwbed.models.data import load_dataset, to_float
from hwbed.models.training import TrainConfig, train

# %% [markdown]
# ## 1. Train an XNOR ResNet20 (cached in runs/ after the first run)

# %%
ckpt = train(TrainConfig(model="resnet20-xnor", data="digits", epochs=30, progress=False))
model, meta = load_checkpoint(ckpt)
print(meta.spec.name, "test accuracy", meta.card["test_accuracy"])

# %% [markdown]
# ## 2. Cost: memory demand and NCC (METHOD.md definitions)

# %%
cost = model_cost(model, meta.spec, meta.input_shape)
print(f"memory {cost.memory_mb:.4f} MB, NCC {cost.ncc_m:.4f} x 1e6, MACs {cost.macs:,}")

# %% [markdown]
# ## 3. Lower to the integer dataflow graph and compare with the twin, bit for bit

# %%
graph = lower_checkpoint(ckpt)
x, y, _ = load_dataset("digits", "test")
logits_graph = execute(graph, x.transpose(0, 2, 3, 1))
with torch.no_grad():
    logits_twin = model(to_float(x)).numpy()
print("nodes:", len(graph.nodes), [n.name for n in graph.nodes[:6]], "...")
print("identical logits:", np.array_equal(logits_graph, logits_twin))
print("graph accuracy:", (logits_graph.argmax(1) == y).mean())

# %% [markdown]
# ## 4. The DSP48 view: slice operations per layer on a PYNQ-Z2 (DSP48E1)

# %%
from hwbed.sim.dsp48 import Family  # noqa: E402
from hwbed.sim.mapping import dsp_report, format_report, report_totals  # noqa: E402

report = dsp_report(graph, Family.E1)
print(format_report(report))
print(report_totals(report)["ops"])
