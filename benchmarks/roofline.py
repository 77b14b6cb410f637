"""The floor under an encoder's extraction on a given GPU, counted on any machine.

METHOD's "two numbers first": every aten op of one in-memory extraction batch (forward and
pooling, ``extract.embed_group``) is recorded with the FLOPs it must do
(``torch.utils.flop_counter``'s formulas) and the fewest bytes it must move (each tensor it reads
once, each it writes once; views move nothing). An op cannot beat ``max(FLOPs / matrix rate,
bytes / memory bandwidth)`` on a card, so the sum over ops is a floor for this op graph run one
kernel per op, the way eager PyTorch runs it. Grouped by where in the model each op runs, the
table says which part of the time is arithmetic and which is moving bytes that a fused kernel
would not move, i.e. what is worth fusing before any GPU time is spent.

It runs on the CPU with the real architecture (random weights) in the dtype the GPU would use;
the op graph is the one CUDA runs, except attention's kernel name and the CNN convolutions'
backend. Ceilings default to what the device notes measured on these machines (a
device-to-device copy, an 8192^3 bf16 matrix product); pass your own with ``--tflops``/``--tbs``.

    python benchmarks/roofline.py --encoder mert-v1-95m --card h100
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

#: card -> (matrix TFLOP/s in bf16, fp32 TFLOP/s without tensor cores, memory TB/s counting
#: bytes read plus written). bf16 and bandwidth: measured on these machines (device notes,
#: KINDS.md); fp32: the datasheet's figure (a lead).
CARDS = {"h100": (798.0, 67.0, 3.0), "h200": (788.0, 67.0, 4.3)}

_VIEW_OPS = {"view", "_unsafe_view", "reshape", "transpose", "permute", "expand", "unsqueeze",
             "squeeze", "slice", "select", "as_strided", "t", "alias", "detach", "split",
             "unbind", "narrow", "split_with_sizes", "lift_fresh", "_reshape_alias", "unfold",
             "view_as_real", "view_as_complex", "diagonal", "movedim"}
#: Allocations touch no memory (``zeros``, which writes, is not one).
_ALLOCATIONS = {"empty", "new_empty", "empty_like", "empty_strided", "new_empty_strided"}
#: Composites whose eager kernel returns its input unchanged in eval mode, where the Python
#: decomposition would clone it.
_KEEP_WHOLE = {"dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout"}
_CPU_ATTENTION = "_scaled_dot_product_flash_attention_for_cpu"


def unique_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel must touch to read or write ``t`` once (broadcast dims count once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in _tensors(item)]
    return []


def attention_flops(query: torch.Tensor, key: torch.Tensor) -> int:
    """Q·K^T and P·V of ``[batch, heads, L, E]`` inputs: 4·B·H·L·S·E."""
    b, h, length, e = query.shape
    return 4 * b * h * length * key.shape[-2] * e


def op_flops(name: str, func, args, kwargs, out) -> int:
    """FLOPs of one op: flop_counter's formulas (an in-place op counts as its out-of-place
    form, an ``out_dtype`` overload as the plain one), plus the CPU's fused attention, which
    flop_counter does not know."""
    if name == _CPU_ATTENTION:
        return attention_flops(args[0], args[1])
    if func._overloadname == "dtype":  # e.g. bmm(a, b, out_dtype): the formula takes (a, b)
        args = tuple(a for a in args if not isinstance(a, torch.dtype))
    packet = func.overloadpacket
    if packet not in flop_registry and name.endswith("_"):
        packet = getattr(torch.ops.aten, name[:-1], packet)
    if packet in flop_registry:
        return int(flop_registry[packet](*args, **kwargs, out_val=out))
    return 0


@dataclass
class OpRecord:
    scope: str
    op: str
    flops: int
    bytes: int
    matrix: bool  # FLOPs on the tensor cores (bf16/fp16 inputs) rather than fp32 units


class ModuleScopes:
    """The dotted name of the innermost module running now, from global forward hooks (torch's
    own ModuleTracker also hooks autograd, which fails on inference-mode weight-norm weights)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.names = {id(m): name for name, m in model.named_modules()}
        self.stack: list[str] = []
        self._handles: list = []

    def __enter__(self) -> ModuleScopes:
        hooks = torch.nn.modules.module
        self._handles = [hooks.register_module_forward_pre_hook(self._push),
                         hooks.register_module_forward_hook(self._pop)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _push(self, module, args) -> None:
        self.stack.append(self.names.get(id(module), self.stack[-1] if self.stack else ""))

    def _pop(self, module, args, out) -> None:
        self.stack.pop()

    @property
    def current(self) -> str:
        return self.stack[-1] if self.stack else ""


@dataclass
class Recorder(TorchDispatchMode):
    """Records each non-view aten op with the innermost module it ran in."""

    scopes: ModuleScopes
    records: list[OpRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Composite ops (linear, matmul, conv1d, ...) reach a mode whole under inference mode;
        # run their decomposition so that the kernels CUDA would launch, and the copies they
        # hide (matmul of a non-contiguous view), are what gets recorded.
        name = func.overloadpacket.__name__
        if name not in _KEEP_WHOLE:
            with self:  # the mode is off inside its own handler: back on for the parts
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if name in _VIEW_OPS or name in _ALLOCATIONS:
            return out
        inputs = _tensors((args, kwargs))
        outputs = _tensors(out)
        in_place = name.endswith("_") or "out" in kwargs
        storages = {t.untyped_storage().data_ptr() for t in inputs}
        if not in_place and any(t.untyped_storage().data_ptr() in storages for t in outputs):
            return out  # an alias (e.g. dropout in eval mode returns its input): no kernel
        if name == _CPU_ATTENTION:
            outputs = outputs[:1]  # the log-sum-exp is a by-product the GPU kernel also writes
        flops = op_flops(name, func, args, kwargs, out)
        moved = sum(unique_bytes(t) for t in inputs)
        if not in_place:
            moved += sum(unique_bytes(t) for t in outputs)
        low = any(t.dtype in (torch.bfloat16, torch.float16) for t in inputs)
        self.records.append(OpRecord(self.scopes.current, name, int(flops), moved, low))
        return out


def group_of(scope: str, op: str) -> str:
    """A coarse place in a Hubert/Wav2Vec2-style model (other models: the module name)."""
    if not scope:
        return ("outside the model: layer outputs to fp32"
                if op in ("stack", "cat", "_to_copy", "to", "copy_")
                else "outside the model: input norm + pooling")
    rules = [("feature_extractor", "CNN feature encoder"),
             ("feature_projection", "feature projection (LayerNorm + Linear)"),
             ("pos_conv_embed", "positional conv"),
             ("_proj", "attention q/k/v/out GEMMs"),
             ("attention", "attention (SDPA + reshapes)"),
             ("intermediate_dense", "FFN GEMMs"), ("output_dense", "FFN GEMMs"),
             ("feed_forward:gemm_act", "FFN GEMMs"),  # the fused GEMM + GELU (EMBENCH_FFN)
             ("add_layer_norm", "residual adds + LayerNorms, fused"),  # EMBENCH_ENCODER_LAYER
             ("feed_forward", "FFN activation"),
             ("layer_norm", "LayerNorms")]
    for needle, label in rules:
        if needle in f"{scope}:{op}":
            return label
    parts = scope.split(".")
    if parts[0] == "encoder" and len(parts) == 3 and op in ("addmm", "mm"):
        return "attention q/k/v/out GEMMs"  # the fused layer's one q/k/v GEMM
    if parts[0] == "encoder" and len(parts) >= 3:
        return "residual adds"
    return f"model: {scope}"


@dataclass
class Row:
    group: str
    flops: float = 0.0
    bytes: float = 0.0
    floor_s: float = 0.0
    kernels: int = 0
    memory_bound_s: float = 0.0


def summarise(records: list[OpRecord], audio_s: float, card: tuple[float, float, float],
              grouper: Callable[[str, str], str] = group_of) -> list[Row]:
    """Per group, per audio-second: FLOPs, bytes, and the roofline floor on ``card``."""
    matrix_tflops, fp32_tflops, tbs = card
    rows: dict[str, Row] = defaultdict(lambda: Row(""))
    for r in records:
        row = rows[grouper(r.scope, r.op)]
        compute = r.flops / ((matrix_tflops if r.matrix else fp32_tflops) * 1e12)
        memory = r.bytes / (tbs * 1e12)
        row.flops += r.flops / audio_s
        row.bytes += r.bytes / audio_s
        row.floor_s += max(compute, memory) / audio_s
        row.memory_bound_s += (memory if memory > compute else 0.0) / audio_s
        row.kernels += 1
    for name, row in rows.items():
        row.group = name
    return sorted(rows.values(), key=lambda row: -row.floor_s)


@contextmanager
def cuda_pooling_on_cpu():
    """Pool on the CPU the way CUDA does: low-precision hidden states read as they are by one
    ``bmm`` that writes fp32 (``windowing.frame_sums``), instead of copied to fp32 first. The CPU
    has no kernel for ``aten::bmm.dtype``; this lends it one (the products of fp32 copies,
    computed inside the op, so a recorder sees one op) for the duration."""
    from embench import windowing

    def bmm_dtype(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        return torch.bmm(a.to(out_dtype), b.to(out_dtype))

    if "dtype" not in torch.ops.aten.bmm.overloads():  # an older torch: CUDA copies too
        yield
        return
    lib = torch.library.Library("aten", "IMPL")
    if not torch._C._dispatch_has_kernel_for_dispatch_key("aten::bmm.dtype", "CPU"):
        lib.impl("bmm.dtype", bmm_dtype, "CPU")  # a torch with its own CPU kernel keeps it
    added = "cpu" not in windowing.FP32_SUMS_FROM_LOW_PRECISION
    windowing.FP32_SUMS_FROM_LOW_PRECISION.add("cpu")
    try:
        yield
    finally:
        if added:
            windowing.FP32_SUMS_FROM_LOW_PRECISION.discard("cpu")
        lib._destroy()


def record(encoder, windows: int, precision: str) -> tuple[list[OpRecord], float]:
    """Records one in-memory extraction of ``windows`` windows (one batch) by ``encoder``,
    already prepared for ``precision`` on its device, after an unrecorded one: what a model
    computes once (e.g. a weight spectrum) is not per batch. Pooling runs as on CUDA
    (:func:`cuda_pooling_on_cpu`), where the low-precision read exists in this torch."""
    from embench.batching import BatchSizer
    from embench.extract import embed_group

    info = encoder.info
    window_s = info.window_s or 30.0
    gen = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(int(window_s * info.sample_rate), generator=gen)
             for _ in range(windows)]
    sizer = BatchSizer(windows, encoder.device, log=lambda m: None, precision=precision)
    scopes = ModuleScopes(getattr(encoder, "model", None) or torch.nn.Identity())
    with cuda_pooling_on_cpu():
        embed_group(encoder, waves, 1.0, sizer).wait()  # once unrecorded: per-model caches fill
        with scopes, Recorder(scopes) as recorder:
            embed_group(encoder, waves, 1.0, sizer).wait()
    return recorder.records, windows * window_s


def floor_audio_s(records: list[OpRecord], audio_s: float,
                  card: tuple[float, float, float]) -> float:
    """The most audio-seconds per second ``records`` allow on ``card``."""
    return 1 / sum(row.floor_s for row in summarise(records, audio_s, card))


def record_batch(encoder_name: str, windows: int, precision: str,
                 feature_encoder: str | None = None, conv: str | None = None,
                 first_layer: str | None = None, ffn: str | None = None,
                 layer: str | None = None) -> tuple[list[OpRecord], float]:
    """:func:`record` for the registry's ``encoder_name`` on the CPU, with the kernel routes
    given (``None``: whatever the environment already says, else the plugin's default)."""
    import os

    if feature_encoder:
        os.environ["EMBENCH_FEATURE_ENCODER"] = feature_encoder
    if conv:
        os.environ["EMBENCH_UNFOLD_CONV"] = conv
    if first_layer:
        os.environ["EMBENCH_FIRST_LAYER"] = first_layer
    if ffn:
        os.environ["EMBENCH_FFN"] = ffn
    if layer:
        os.environ["EMBENCH_ENCODER_LAYER"] = layer
    from embench import precision as precisions
    from embench.plugins import get_registry

    encoder = get_registry().encoder(encoder_name)
    precisions.prepare(encoder, precision, torch.device("cpu"), "random", None)
    return record(encoder, windows, precision)


def card_ceilings(name: str) -> tuple[float, float, float] | None:
    """:data:`CARDS`' ceilings for a device name such as "NVIDIA H100 80GB HBM3"."""
    for key, ceilings in CARDS.items():
        if key in name.lower():
            return ceilings
    return None


def render(rows: list[Row], card_name: str, card: tuple[float, float, float]) -> str:
    total = sum(r.floor_s for r in rows)
    lines = [f"floor on {card_name} ({card[0]:g} bf16 TFLOP/s, {card[2]:g} TB/s): "
             f"{1e6 * total:.1f} us per audio-s = {1 / total:,.0f} audio-s/s at most",
             "", "| part | GFLOP per audio-s | MB moved per audio-s | floor us per audio-s "
             "| share | of it memory-bound | ops per batch |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.group} | {r.flops / 1e9:.2f} | {r.bytes / 1e6:.1f} | "
                     f"{1e6 * r.floor_s:.2f} | {100 * r.floor_s / total:.0f}% | "
                     f"{100 * r.memory_bound_s / max(r.floor_s, 1e-30):.0f}% | {r.kernels} |")
    flops = sum(r.flops for r in rows)
    lines.append(f"| total | {flops / 1e9:.2f} | {sum(r.bytes for r in rows) / 1e6:.1f} | "
                 f"{1e6 * total:.2f} | 100% | | {sum(r.kernels for r in rows)} |")
    arithmetic = flops / (card[0] * 1e12)
    lines.append(f"\nall FLOPs at the matrix rate alone: {1e6 * arithmetic:.1f} us per audio-s "
                 f"= {1 / arithmetic:,.0f} audio-s/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="mert-v1-95m")
    parser.add_argument("--windows", type=int, default=4, help="windows in the recorded batch")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--feature-encoder", choices=["module", "gemm", "fused"], default=None)
    parser.add_argument("--ffn", choices=["module", "fused"], default=None,
                        help="EMBENCH_FFN: the FFN's first GEMM with its GELU as one kernel")
    parser.add_argument("--layer", choices=["module", "fused"], default=None,
                        help="EMBENCH_ENCODER_LAYER: one q/k/v GEMM, each residual add fused "
                             "into its LayerNorm")
    parser.add_argument("--conv", choices=["fft", "pos", "all", "cl", "off"], default=None,
                        help="EMBENCH_UNFOLD_CONV: the positional conv's route")
    parser.add_argument("--first-layer", choices=["folded", "module"], default=None,
                        help="EMBENCH_FIRST_LAYER: the first CNN layer's route")
    parser.add_argument("--card", default="h100", choices=sorted(CARDS))
    parser.add_argument("--tflops", type=float, help="bf16 matrix TFLOP/s (overrides --card)")
    parser.add_argument("--tbs", type=float, help="memory TB/s (overrides --card)")
    parser.add_argument("--ops", type=int, default=0, help="also list the N costliest ops")
    args = parser.parse_args(argv)
    card = CARDS[args.card]
    card = (args.tflops or card[0], card[1], args.tbs or card[2])
    records, audio_s = record_batch(args.encoder, args.windows, args.precision,
                                    args.feature_encoder, args.conv, args.first_layer,
                                    args.ffn, args.layer)
    print(f"{args.encoder}, {args.windows} windows, weights {args.precision}, conv "
          f"{args.conv or 'default'}, first layer {args.first_layer or 'default'}, feature "
          f"encoder {args.feature_encoder or 'default'}, FFN {args.ffn or 'default'}, "
          f"encoder layer {args.layer or 'default'}, "
          f"torch {torch.__version__}")
    print(render(summarise(records, audio_s, card), args.card, card))
    if args.ops:
        per_op = summarise(records, audio_s, card, lambda s, o: f"{group_of(s, o)}: {o}")
        print("\n" + render(per_op[:args.ops], args.card, card).split("\n\n", 1)[1])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
