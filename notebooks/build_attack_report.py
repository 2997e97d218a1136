# %% [markdown]
# # From build to attack to report, on the embedded default
#
# Runnable as a script (`python notebooks/build_attack_report.py`) or cell by cell in any
# editor that understands `# %%` cells (VS Code, Jupytext). It trains and builds the
# embedded default (resnet20-xnor on the 8x8 digits shipped with scikit-learn) and its float
# baseline, attacks both with the smoke grid, twin and DSP48 simulator side by side, and
# writes the report. A few minutes at full size; `HWBED_SMALL=1` runs it in about a minute
# (2 epochs, 8 images: what the test suite does). Everything lands under the working folder
# (`build/`, `runs/`).

# %%
import os
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Keyword arguments are being passed")
SMALL = os.environ.get("HWBED_SMALL") == "1"
EPOCHS, IMAGES = (2, 8) if SMALL else (30, 32)

# %% [markdown]
# ## 1. Build: train, export to QONNX, lower, fold, estimate, verify
#
# The same as `python -m hwbed.build --target pynq-z2`; `summary.json` holds the cost columns.

# %%
from hwbed.fpga.build.flow import BuildConfig, build  # noqa: E402

folder = build(BuildConfig(target="pynq-z2", epochs=EPOCHS, verify_n=8, progress=False))
print("built", folder, sorted(p.name for p in Path(folder).iterdir()))

# %% [markdown]
# ## 2. The float baseline: the same architecture without compression

# %%
from hwbed.models.training import TrainConfig, train  # noqa: E402

baseline = train(TrainConfig(model="resnet20", epochs=EPOCHS, progress=False))
print("float baseline", baseline)

# %% [markdown]
# ## 3. Attack: the smoke grid on the twin and the simulator, every cell into the store
#
# The float network has no hardware path, so it is attacked on its twin only; white-box
# results are also kept in float space (`twin-float`). The sweep runs as the CLI: its worker
# processes are spawned, and a spawned worker imports the script that started it, so a sweep
# started from a script needs an `if __name__ == "__main__":` guard (the CLI has one).

# %%
import subprocess  # noqa: E402
import sys  # noqa: E402

from hwbed.store import load  # noqa: E402

STORE = Path("runs/attack/notebook")
attack = [sys.executable, "-m", "hwbed.attack", "--build", str(folder), "--checkpoint"]
attack += [str(baseline), "--images", str(IMAGES), "--store", str(STORE), "--no-progress"]
subprocess.run(attack, check=True)
rows = load(STORE)
print(rows.groupby(["model", "executable"]).key.nunique())

# %% [markdown]
# ## 4. One view at a time: each is a function of the cells frame

# %%
from hwbed.report.frame import cells  # noqa: E402
from hwbed.report.tables import full_table, side_by_side  # noqa: E402

c = cells(STORE)
wide = side_by_side(full_table(c))
print(wide[["model", "attack", "eps", "iterations", "float net", "twin-float", "sim"]])

# %% [markdown]
# ## 5. The whole report: tables, plots and one page
#
# The same as `python -m hwbed.report runs/attack/notebook --out runs/report/notebook`.

# %%
from hwbed.report.run import ReportConfig, write_report  # noqa: E402

config = ReportConfig(store=STORE, out=Path("runs/report/notebook"), progress=False)
config.check()
report = write_report(config)
for f in report.files:
    print(f"{f.stat().st_size:>9,}  {f}")
print("open", report.page)
