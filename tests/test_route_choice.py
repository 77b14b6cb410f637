"""``auto`` routes: the fastest candidate that agrees with the default, chosen once per input
shape on CUDA (here: on the CPU, with timed_devices widened and a fake timer)."""

from __future__ import annotations

import pytest
import torch
from transformers import HubertConfig, HubertModel

from embench_plugins import fast_conv, fused_layers, fused_routes, gemm_features, route_choice
from embench_plugins.route_choice import MIN_BATCH, RouteChoice
from tests.test_mert import TINY


class FakeTimer:
    """Seconds per candidate, by the name the candidate tags its output with."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.calls = seconds, []

    def __call__(self, run) -> float:
        name = run().route
        self.calls.append(name)
        return self.seconds[name]


def _tagged(name: str, scale: float = 1.0, fail: Exception | None = None):
    def route(x):
        if fail is not None:
            raise fail
        out = (2.0 * scale) * x
        out.route = name  # what FakeTimer reads
        return out
    return route


@pytest.fixture
def timed_on_cpu(monkeypatch):
    monkeypatch.setattr(RouteChoice, "timed_devices", ("cuda", "cpu"))


def test_the_cpu_runs_the_default_untimed():
    timer = FakeTimer({"a": 2.0, "b": 1.0})
    choice = RouteChoice("part", {"a": _tagged("a"), "b": _tagged("b")}, "a", timer)
    assert choice(torch.ones(MIN_BATCH, 3)).route == "a"
    assert timer.calls == [] and choice.notes() == [] and choice.chosen == {}


def test_fastest_agreeing_route_is_chosen_once_per_shape(timed_on_cpu):
    timer = FakeTimer({"a": 2.0, "b": 1.0, "c": 3.0})
    choice = RouteChoice("part", {n: _tagged(n) for n in "abc"}, "a", timer)
    assert choice(torch.ones(MIN_BATCH, 3)).route == "b"
    assert sorted(timer.calls) == ["a", "b", "c"]
    assert choice(torch.ones(2 * MIN_BATCH, 3)).route == "b"  # another batch size: no timing
    assert len(timer.calls) == 3
    assert choice(torch.ones(MIN_BATCH, 4)).route == "b"  # another length: timed again
    assert len(timer.calls) == 6
    [first, _] = choice.notes()
    assert first.startswith(f"part: b for {MIN_BATCH} x [3] float32 (b 1000.00 ms, a 2000.00")


def test_small_batches_run_the_default_and_decide_nothing(timed_on_cpu):
    timer = FakeTimer({"a": 2.0, "b": 1.0})
    choice = RouteChoice("part", {"a": _tagged("a"), "b": _tagged("b")}, "a", timer)
    assert choice(torch.ones(MIN_BATCH - 1, 3)).route == "a"
    assert timer.calls == [] and choice.chosen == {}


def test_a_fast_route_that_disagrees_or_fails_is_rejected_and_said_so(timed_on_cpu):
    timer = FakeTimer({"a": 2.0, "wrong": 0.5, "broken": 0.1})
    choice = RouteChoice("part", {"a": _tagged("a"), "wrong": _tagged("wrong", scale=1.1),
                                  "broken": _tagged("broken", fail=RuntimeError("no triton"))},
                         "a", timer)
    assert choice(torch.ones(MIN_BATCH, 3)).route == "a"
    [note] = choice.notes()
    assert "rejected wrong: differs from a by 1.0e-01" in note
    assert "rejected broken: RuntimeError: no triton" in note


def test_out_of_memory_and_a_failing_default_propagate(timed_on_cpu):
    oom = RouteChoice("part", {"a": _tagged("a"),
                               "b": _tagged("b", fail=torch.cuda.OutOfMemoryError("full"))},
                      "a", FakeTimer({"a": 1.0}))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        oom(torch.ones(MIN_BATCH, 3))
    assert oom.chosen == {}  # the batch-size probe backs off and the choice is made later
    broken = RouteChoice("part", {"a": _tagged("a", fail=ValueError("bad input"))}, "a")
    with pytest.raises(ValueError, match="bad input"):
        broken(torch.ones(MIN_BATCH, 3))
    with pytest.raises(ValueError, match="default route 'z'"):
        RouteChoice("part", {"a": _tagged("a")}, "z")


def test_autocast_is_its_own_shape(timed_on_cpu):
    timer = FakeTimer({"a": 2.0, "b": 1.0})
    choice = RouteChoice("part", {"a": _tagged("a"), "b": _tagged("b")}, "a", timer)
    choice(torch.ones(MIN_BATCH, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        choice(torch.ones(MIN_BATCH, 3))
    assert len(choice.chosen) == 2


def test_installed_auto_routes_pick_the_fused_kernels_when_they_are_fastest(timed_on_cpu,
                                                                            monkeypatch):
    """The whole mechanism on a tiny HuBERT: every ``auto`` part times its candidates on the
    first batch (a timer that calls the fused and FFT routes fastest), the model's result stays
    the modules', and the choices are reported."""
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**TINY, attn_implementation="sdpa")).eval()
    x = 0.1 * torch.randn(MIN_BATCH, 8000)
    with torch.inference_mode():
        ref = model(x, output_hidden_states=True).hidden_states
    for variable in route_choice.ROUTE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)  # the defaults: auto
    ranks = {"fused": 1.0, "fft": 1.0, "gemm": 2.0, "pos": 2.0, "module": 3.0}
    names = iter([])

    def timer(run):
        run()
        return ranks[next(names)]

    assert fast_conv.install(model) == ["encoder.pos_conv_embed.conv"]
    assert gemm_features.install(model)
    assert len(fused_routes.install_ffn(model)) == TINY["num_hidden_layers"]
    assert len(fused_layers.install_layers(model)) == TINY["num_hidden_layers"]
    choices = model.__dict__["_embench_route_choices"]
    for choice in choices:
        choice.timer = timer
    # each choice times its default first, then the others in order
    order = {c.what: [c.default] + [n for n in c.candidates if n != c.default] for c in choices}
    layer = "encoder layer: one q/k/v GEMM, add + LayerNorm fused"
    # the layer's reference run (its module) meets the FFN first, which decides then
    names = iter(order["CNN feature encoder"] + order["positional conv"]
                 + order["FFN first Linear + GELU"] + order[layer])
    with torch.inference_mode():
        got = model(x, output_hidden_states=True).hidden_states
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    notes = route_choice.notes_of(model)
    assert [n.split(" (")[0] for n in notes] == [
        f"positional conv: fft for {MIN_BATCH} x [{TINY['hidden_size']}, 24] float32",
        f"CNN feature encoder: fused for {MIN_BATCH} x [8000] float32",
        f"FFN first Linear + GELU: fused for {MIN_BATCH} x [24, {TINY['hidden_size']}] float32",
        f"{layer}: fused for {MIN_BATCH} x [24, {TINY['hidden_size']}] float32"]
    assert all("rejected" not in n for n in notes)
