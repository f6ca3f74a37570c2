"""Storage: what N tasks cost on disk as adapters in hotswap's store versus one full
model copy per task (issue #16, comparison 6).

Two parts, both printed and recorded in BENCHMARKS.md with a plot:

- **Measured** on the bundled model: the demo adapters of examples/adapters (LoRA,
  prompt, P- and prefix tuning) and rank-16 LoRAs on all projections are stored in a
  fresh store through ``Store.add`` (admission, content addressing), and the bytes the
  store takes on disk (allocated blocks, manifests and refs included) are counted
  against the base model's weight files.
- **Arithmetic** for the bundled model and Llama-3-8B's shapes: parameters of a rank-r
  LoRA on all seven projections (sum over layers of r x (in + out) per projection) and
  of the full model (embeddings, projections, norms), at bf16. The bundled model's
  arithmetic is checked against the measured file sizes first, so the 8B figures come
  from a formula that was just seen to be right.

    python bench/storage.py                 # records in BENCHMARKS.md
    python bench/storage.py --no-record
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import common

TASKS = (1, 10, 100, 1000)
BF16 = 2


@dataclass(frozen=True)
class Model:
    name: str
    shape: common.ModelShape
    vocab: int
    tied_embeddings: bool

    def full_params(self) -> int:
        s = self.shape
        per_layer = sum(fan_in * fan_out for _, fan_in, fan_out in
                        (s.projection(m) for m in common.ALL_MODULES)) + 2 * s.hidden  # 2 norms
        embeddings = self.vocab * s.hidden * (1 if self.tied_embeddings else 2)
        return s.layers * per_layer + embeddings + s.hidden  # + the final norm

    def lora_params(self, rank: int) -> int:
        s = self.shape
        return s.layers * sum(rank * (fan_in + fan_out) for _, fan_in, fan_out in
                              (s.projection(m) for m in common.ALL_MODULES))


BUNDLED = Model("SmolLM2-135M (bundled)", common.BUNDLED_MODEL, vocab=49152,
                tied_embeddings=True)
# meta-llama/Meta-Llama-3-8B's config.json: 32 layers, hidden 4096, MLP 14336, 32 query
# and 8 KV heads of 128, vocabulary 128256, untied embeddings (8.03 B parameters).
LLAMA3_8B = Model("Llama-3-8B", common.ModelShape(layers=32, hidden=4096, intermediate=14336,
                                                  heads=32, kv_heads=8, head_dim=128),
                  vocab=128256, tied_embeddings=False)


def disk_bytes(root: Path) -> int:
    """Bytes allocated on disk under ``root`` (what ``du`` counts)."""
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def file_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def store_adapters(model_dir: Path, work: Path, lora16: int) -> tuple[list[tuple[str, str, int]],
                                                                       int, int]:
    """Store the demo adapters and ``lora16`` rank-16 LoRAs; (name, type, bytes of its
    files) each, the store's disk bytes, and one rank-16 LoRA's weights file size."""
    from hotswap.adapters.admission import AdmissionLimits
    from hotswap.adapters.store import Store
    from hotswap.server.base_model import read_base_spec

    spec = read_base_spec(str(model_dir))
    limits = AdmissionLimits(max_lora_rank=64, peft_types=frozenset(
        {"LORA", "PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"}))
    store = Store(work / "store")
    dirs: list[Path] = sorted(p for p in (common.REPO / "examples" / "adapters").iterdir()
                              if p.is_dir())
    weights16 = 0
    for i in range(lora16):
        files = common.lora_files(common.BUNDLED_MODEL, rank=16, target_modules=common.ALL_MODULES,
                                  seed=500 + i, std=0.02, dtype="bfloat16")
        weights16 = len(files["adapter_model.safetensors"])
        dirs.append(common.write_dir(work / "gen" / f"lora16-{i + 1}", files))
    rows = []
    with common.progress_bar() as bar:
        task = bar.add_task("storing adapters", total=len(dirs))
        for d in dirs:
            with store.staging() as staged:
                shutil.copytree(d, staged, dirs_exist_ok=True)
                manifest = store.add(staged, name=d.name, source=f"path:{d.resolve()}",
                                     spec=spec, limits=limits)
            rows.append((d.name, manifest.peft_type, file_bytes(d)))
            bar.advance(task)
    return rows, disk_bytes(store.root), weights16


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def arithmetic_table(models: list[Model], rank: int) -> tuple[str, dict[str, tuple[int, int]]]:
    lines = [f"| model | full model (bf16) | rank-{rank} LoRA, all projections (bf16) | "
             "adapter / model | " + " | ".join(f"{n} task{'s' if n > 1 else ''}"
                                              for n in TASKS) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(TASKS)]
    sizes = {}
    for m in models:
        full, lora = m.full_params() * BF16, m.lora_params(rank) * BF16
        sizes[m.name] = (full, lora)
        ratios = " | ".join(f"{n * full / (full + n * lora):,.0f}x" for n in TASKS)
        lines.append(f"| {m.name} | {mib(full)} ({m.full_params() / 1e9:.3f} B params) | "
                     f"{mib(lora)} ({m.lora_params(rank) / 1e6:.2f} M params) | "
                     f"{lora / full:.2%} | {ratios} |")
    lines += ["", "The task columns: N full copies over one base plus N adapters."]
    return "\n".join(lines), sizes


def plot(sizes: dict[str, tuple[int, int]], path: Path) -> None:
    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    n = [1, 3, 10, 30, 100, 300, 1000]
    for (name, (full, lora)), color in zip(sizes.items(), ("tab:blue", "tab:orange"),
                                           strict=False):
        ax.plot(n, [k * full / 2**30 for k in n], "--", color=color,
                label=f"{name}: a full copy per task")
        ax.plot(n, [(full + k * lora) / 2**30 for k in n], "-", color=color,
                label=f"{name}: one base + rank-16 adapters")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tasks")
    ax.set_ylabel("GiB on disk (bf16)")
    ax.set_title("Storage per number of tasks")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    common.save_figure(fig, path)


def main() -> None:
    common.setup_logging()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lora16", type=int, default=4,
                   help="rank-16 all-projection LoRAs to store beside the demo adapters")
    p.add_argument("--no-record", dest="record", action="store_false")
    args = p.parse_args()
    from hotswap.server.base_model import weights_bytes
    from hotswap.server.config import home_from_env
    from hotswap.server.model_prep import prepare_bundled_model

    model_dir = prepare_bundled_model(home_from_env())
    base = weights_bytes(str(model_dir)) or 0
    with tempfile.TemporaryDirectory(prefix="storage-") as tmp:
        rows, store_disk, weights16 = store_adapters(model_dir, Path(tmp), args.lora16)
    # The formula against the files: a rank-16 LoRA's weights and the base model's
    # weights (both within the safetensors headers' few KB).
    predicted16 = BUNDLED.lora_params(16) * BF16
    predicted_base = BUNDLED.full_params() * BF16
    check = (f"Check of the arithmetic on the bundled model: rank-16 LoRA predicted "
             f"{predicted16:,} B, file {weights16:,} B; model predicted {predicted_base:,} B, "
             f"weight files {base:,} B.")
    if abs(weights16 - predicted16) > 64 << 10:
        raise SystemExit(f"the LoRA arithmetic is off: {check}")
    if base and abs(base - predicted_base) > base * 0.01:
        raise SystemExit(f"the model arithmetic is off: {check}")
    adapters_total = sum(b for _, _, b in rows)
    measured = ["| adapter | PEFT type | files |", "|---|---|---:|"]
    measured += [f"| {name} | {kind} | {b / 1024:,.1f} KiB |" for name, kind, b in rows]
    measured += [
        "", f"{len(rows)} adapters: {mib(adapters_total)} of files, {mib(store_disk)} "
        f"allocated by the store (manifests, refs and filesystem blocks included) beside "
        f"one base model of {mib(base)}: {len(rows)} full copies would take "
        f"{mib(len(rows) * base)}, {len(rows) * base / (base + store_disk):.1f}x the "
        f"base plus the store."]
    arith, sizes = arithmetic_table([BUNDLED, LLAMA3_8B], 16)
    png = common.stamped_png("storage")
    plot(sizes, png)
    text = "\n".join(measured) + "\n\n" + check + "\n\n" + arith
    common.console.print(text)
    common.console.print(f"plot: {common.repo_relative(png)}")
    if args.record:
        import datetime as dt

        common.record_section(f"""
## Storage: adapters in the store vs a full model copy per task ({dt.date.today()})

Command: `python bench/storage.py --lora16 {args.lora16}`. Measured on the bundled model
(bf16 weights files); the second table is arithmetic from the models' shapes (all seven
projections, bf16), checked against the measured files first.

{text}

![storage]({common.repo_relative(png)})
""")


if __name__ == "__main__":
    main()
