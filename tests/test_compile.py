"""``--compile`` on a real model: torch.compile traces the inference routes (FFT positional conv,
folded first layer, the ``auto`` route choices, the fused operators) without a graph break of
their own and changes no result."""

from __future__ import annotations

import pytest
import torch
from transformers import HubertConfig

from embench_plugins.mert import MertEncoder
from tests.test_mert import TINY


@pytest.mark.slow
@pytest.mark.parametrize("routes", [{}, {"EMBENCH_FEATURE_ENCODER": "fused",
                                         "EMBENCH_FFN": "fused",
                                         "EMBENCH_ENCODER_LAYER": "fused"}])
def test_compiled_forward_equals_eager_without_our_graph_breaks(routes, monkeypatch):
    for variable, value in routes.items():
        monkeypatch.setenv(variable, value)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    encoder = MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    encoder.load(torch.device("cpu"), "random")
    x = 0.1 * torch.randn(2, 24_000, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        eager = encoder.forward(x)
        compiled = torch.compile(encoder.forward, dynamic=False)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    breaks = "\n".join(torch._dynamo.utils.counters["graph_break"])
    assert "embench_plugins" not in breaks and "is_inference" not in breaks, breaks
