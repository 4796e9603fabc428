"""python3 benchmarks/gemm_micro/export_models.py OUTDIR [names]: exports MobileNetV2, EfficientNet-B0 and
the BERT-style encoder (names: comma-separated, compare.py's case names) exactly as
benchmarks/web/compare.py builds them, with this checkout's kernels, for models_ab.mjs. To A/B a
kernel change: export with one build into a/, rebuild (make kernels), export into b/."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "benchmarks" / "web"), str(ROOT / "benchmarks"), str(ROOT / "tests")]
import compare  # noqa: E402
import torch_wasm_backend as twb  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
names = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("mobilenet_v2", "efficientnet_b0", "bert")
print("kernels of", Path(twb.__file__).parent)
for case in compare.cases(False, names):
    model = compare.calibrate_batch_norm(case.model, next(iter(case.inputs.values())).shape)
    twb.export(model, (), str(out / f"{case.name}.wasm"), kwargs=case.inputs)
    print("exported", out / f"{case.name}.wasm")
