"""MERT-v1 plugin: tiny random HubertModels saved with ``save_pretrained`` (no hub access) and
loaded back through the plugin's real ``load`` path, the checkpoint key layout of MERT-v1, the
feature normalisation against the real ``Wav2Vec2FeatureExtractor``, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

from embench import Encoder, MissingWeightsError, hookimpl, plugins
from embench.extract import embed_waveforms
from embench_plugins import mert
from embench_plugins.hf_speech import zero_mean_unit_var
from tests.helpers_cli import run_main

SR = 24_000
CPU = torch.device("cpu")
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def _noise(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * SR), generator=gen) + 0.05


def _states(enc, x: torch.Tensor) -> torch.Tensor:
    """The encoder's per-layer hidden states (a list, in the model's dtype) as one
    ``[batch, layers, frames, dim]`` tensor, for comparisons."""
    states = enc.forward(x)
    assert isinstance(states, list) and len(states) == enc.info.num_layers
    return torch.stack(states, 1)





@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A ``--weights-dir`` holding a tiny MERT-95M-shaped checkpoint, as save_pretrained
    writes it (``<dir>/MERT-v1-95M``), with its feature extractor."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(123)
    model = HubertModel(HubertConfig(**TINY))
    model.save_pretrained(root / "MERT-v1-95M")
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(
        root / "MERT-v1-95M")
    return root


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> mert.MertEncoder:
    enc = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    enc.load(CPU, "pretrained", weights_path=str(tiny_dir))
    return enc


def test_info_of_real_variants() -> None:
    small, large = mert.MertEncoder("mert-v1-95m").info, mert.MertEncoder("mert-v1-330m").info
    assert (small.hf_id, large.hf_id) == ("m-a-p/MERT-v1-95M", "m-a-p/MERT-v1-330M")
    assert (small.num_layers, small.dims, large.num_layers, large.dims) == (13, (768,), 25, (1024,))
    for info in (small, large):
        assert info.sample_rate == SR and info.frame_rate == 75.0 and info.min_samples == 400
        assert info.window_s == 5.0 and info.hop_s is None and info.revision is None
        assert info.license == "CC-BY-NC-4.0" and "2306.00107" in info.citation
        assert info.homepage and info.description and info.version == "1"


def test_hook_registers_both_variants_without_loading() -> None:
    registered: list[Encoder] = []
    mert.register_encoders(register=lambda enc, aliases=(): registered.append(enc))
    assert [e.name for e in registered] == ["mert-v1-95m", "mert-v1-330m"]
    assert not any(e.loaded for e in registered)


def test_explicit_configs() -> None:
    small = mert.MertEncoder("mert-v1-95m").model_config()
    default = HubertConfig()
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "feat_extract_norm", "do_stable_layer_norm", "conv_bias", "conv_kernel"):
        assert getattr(small, key) == getattr(default, key), key  # 95M = HubertConfig defaults
    large = mert.MertEncoder("mert-v1-330m").model_config()
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads,
            large.intermediate_size) == (1024, 24, 16, 4096)
    assert large.do_stable_layer_norm and large.feat_extract_norm == "group"
    assert not large.conv_bias and large.tie_last_hidden_states is True
    assert small.layerdrop == large.layerdrop == 0.0


def test_real_size_parameter_counts() -> None:
    """The random-weights control has the real architecture (counted on the meta device)."""
    counts = {}
    for variant in ("mert-v1-95m", "mert-v1-330m"):
        enc = mert.MertEncoder(variant)
        with torch.device("meta"):
            model = enc.model_class()(enc.model_config())
        counts[variant] = sum(p.numel() for p in model.parameters())
    assert 94e6 < counts["mert-v1-95m"] < 95e6
    assert 310e6 < counts["mert-v1-330m"] < 320e6


def test_shapes_and_frame_rate(tiny) -> None:
    assert (tiny.info.num_layers, tiny.info.dims, tiny.info.frame_rate) == (3, (32,), 75.0)
    assert tiny.info.version != "1"  # a tiny architecture never shares the real model's cache
    out = _states(tiny, _noise(3, 2.0))
    assert out.shape[:2] == (3, 3) and out.shape[3] == 32 and out.dtype == torch.float32
    assert abs(out.shape[2] - 2.0 * 75) <= 1
    assert torch.isfinite(out).all()


def test_deterministic_across_calls_and_loads(tiny, tiny_dir) -> None:
    x = _noise(2, 1.0)
    first = _states(tiny, x)
    torch.testing.assert_close(_states(tiny, x), first, rtol=0, atol=0)
    again = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    again.load(CPU, "pretrained", weights_path=str(tiny_dir))
    torch.testing.assert_close(_states(again, x), first, rtol=0, atol=0)


def test_batched_equals_one_at_a_time(tiny) -> None:
    x = _noise(4, 1.5, seed=3)
    batched = _states(tiny, x)
    single = torch.cat([_states(tiny, x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-4)


def test_normalisation_matches_feature_extractor(tiny, tiny_dir) -> None:
    x = _noise(3, 1.0, seed=5) * torch.tensor([[1.0], [0.01], [3.0]])
    fe = Wav2Vec2FeatureExtractor.from_pretrained(tiny_dir / "MERT-v1-95M")
    expected = fe([row.numpy() for row in x], sampling_rate=SR, return_tensors="pt").input_values
    torch.testing.assert_close(zero_mean_unit_var(x), expected, rtol=1e-5, atol=1e-5)
    # and the whole forward equals the extractor + model recipe of the model card
    with torch.no_grad():
        ref = tiny.model(expected, output_hidden_states=True).hidden_states
    torch.testing.assert_close(_states(tiny, x), torch.stack(ref, 1), rtol=1e-4, atol=1e-4)


def test_30s_clip_is_six_5s_windows(tiny) -> None:
    calls: list[tuple[int, ...]] = []
    forward = tiny.forward
    tiny.forward = lambda w: calls.append(tuple(w.shape)) or forward(w)
    try:
        (clip,) = embed_waveforms(tiny, [_noise(1, 30.0)[0]], frame_rate=2.0, batch_size=4)
    finally:
        del tiny.forward
    assert calls == [(4, 5 * SR), (2, 5 * SR)]
    assert len(clip) == 3 and all(layer.shape == (60, 32) for layer in clip)


def test_checkpoint_with_mert_key_layout_loads_completely(tmp_path, hf_warnings) -> None:
    """MERT-v1 checkpoints store the positional conv with the old weight-norm names
    (``weight_g``/``weight_v``) and a config of model type "mert_model" (remote code).
    transformers 5 renames the keys on load; nothing may be missing or unexpected."""
    config = HubertConfig(**TINY)
    torch.manual_seed(7)
    model = HubertModel(config)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    prefix = "encoder.pos_conv_embed.conv."
    state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
    state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")
    folder = tmp_path / "MERT-v1-95M"
    folder.mkdir()
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    hub_config = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    hub_config |= {"model_type": "mert_model", "architectures": ["MERTModel"],
                   "auto_map": {"AutoModel": "modeling_MERT.MERTModel"}, "conv_bias": False,
                   "feat_extract_norm": "group", "do_stable_layer_norm": False,
                   "feature_extractor_cqt": False, "sample_rate": SR}
    (folder / "config.json").write_text(json.dumps(hub_config))

    _, info = HubertModel.from_pretrained(folder, config=config, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"] and not info["error_msgs"]

    enc = mert.MertEncoder("mert-v1-95m", config=config)
    enc.load(CPU, "pretrained", weights_path=str(tmp_path))
    assert not [r for r in hf_warnings if "LOAD REPORT" in r.getMessage()]
    loaded = enc.model.state_dict()
    renamed = {prefix + "weight_g": prefix + "parametrizations.weight.original0",
               prefix + "weight_v": prefix + "parametrizations.weight.original1"}
    assert {renamed.get(k, k) for k in state} == set(loaded)
    for key, value in state.items():
        torch.testing.assert_close(loaded[renamed.get(key, key)], value, rtol=0, atol=0)


def test_local_checkpoint_of_another_architecture_is_refused(tiny_dir) -> None:
    with pytest.raises(MissingWeightsError, match="hidden_size is 32, mert-v1-95m needs 768"):
        mert.MertEncoder("mert-v1-95m").load(CPU, "pretrained", weights_path=str(tiny_dir))


def test_330m_last_state_is_after_the_final_layer_norm(tmp_path) -> None:
    config = HubertConfig(**TINY, do_stable_layer_norm=True, tie_last_hidden_states=True)
    enc = mert.MertEncoder("mert-v1-330m", config=config)
    enc.load(CPU, "random")
    x = _noise(2, 1.0)
    out = _states(enc, x)
    with torch.no_grad():
        last = enc.model(zero_mean_unit_var(x)).last_hidden_state
    torch.testing.assert_close(out[:, -1], last)
    assert out[:, -1].mean(-1).abs().max() < 1e-4  # LayerNorm'd (fresh weight 1, bias 0)
    # a saved copy records the flag, and a copy that contradicts it is refused
    enc.model.save_pretrained(tmp_path / "MERT-v1-330M")
    assert json.loads((tmp_path / "MERT-v1-330M" / "config.json").read_text())[
        "tie_last_hidden_states"] is True
    enc.load(CPU, "pretrained", weights_path=str(tmp_path))
    untied = HubertConfig(**TINY, do_stable_layer_norm=True, tie_last_hidden_states=False)
    HubertModel(untied).save_pretrained(tmp_path / "untied" / "MERT-v1-330M")
    with pytest.raises(MissingWeightsError, match="tie_last_hidden_states"):
        enc.load(CPU, "pretrained", weights_path=str(tmp_path / "untied"))


def test_offline_without_weights_says_what_to_do() -> None:
    with pytest.raises(MissingWeightsError) as err:
        mert.MertEncoder("mert-v1-95m").load(CPU, "pretrained")
    msg = str(err.value)
    for needle in ("m-a-p/MERT-v1-95M", "HF_HOME", "HF_HUB_OFFLINE", "hf download"):
        assert needle in msg


def test_random_weights_are_seeded() -> None:
    a = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    b = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    a.load(CPU, "random")
    b.load(CPU, "random")
    assert a.weights == "random"
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                              strict=True):
        assert torch.equal(pa, pb), name


def test_trainable_module_and_gradient_checkpointing(tiny_dir) -> None:
    enc = mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY))
    with pytest.raises(RuntimeError):
        enc.trainable_module()
    enc.load(CPU, "pretrained", weights_path=str(tiny_dir))
    module = enc.trainable_module()
    assert isinstance(module, torch.nn.Module)
    assert any(p.requires_grad for p in module.parameters())
    enc.set_gradient_checkpointing(True)
    module.train()
    out = _states(enc, _noise(2, 1.0))
    assert out.shape[1] == 3  # layerdrop is off: every layer is there in train mode too
    out.pow(2).mean().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:5])
    assert module.encoder.layers[0].gradient_checkpointing
    enc.set_gradient_checkpointing(False)
    assert not module.encoder.layers[0].gradient_checkpointing
    enc.unload()
    assert not enc.loaded and enc.model is None


class _TinyMert:
    """Registers a tiny-architecture MERT under the real name, for CLI runs on a CPU."""

    @hookimpl
    def register_encoders(self, register):
        register(mert.MertEncoder("mert-v1-95m", config=HubertConfig(**TINY)))


def test_cli_random_weights_end_to_end(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "toy")  # the toy tasks, not the real MERT
    plugins.register_plugin(_TinyMert(), name="tiny-mert")
    out = tmp_path / "out"
    assert run_main(["run", "--encoders", "mert-v1-95m", "--weights", "random", "--tasks",
                  "toy-genres", "--seeds", "1", "--no-progress", "--num-workers", "0",
                  "-o", str(out)]) == 0
    (result_file,) = out.glob("run-*.json")
    (result,) = json.loads(result_file.read_text())["results"]
    assert (result["encoder"], result["weights"], result["task"]) == (
        "mert-v1-95m", "random", "toy-genres")


def test_cli_missing_weights_fail_one_pair_only(tmp_path, monkeypatch, capsys) -> None:
    from tests.fakes import FakePlugin

    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")  # no entry points: register by hand
    plugins.register_plugin(mert, name="mert")
    plugins.register_plugin(FakePlugin(), name="fake")
    out = tmp_path / "out"
    code = run_main(["run", "-e", "mert-v1-95m,fake-spectral", "-t", "fake-tones", "--seeds", "1",
                  "--no-progress", "--num-workers", "0", "-o", str(out)])
    assert code == 1
    result = json.loads(next(out.glob("run-*.json")).read_text())
    assert [r["encoder"] for r in result["results"]] == ["fake-spectral"]
    (failure,) = result["failures"]
    assert failure["encoder"] == "mert-v1-95m"
    assert failure["error_type"] == "MissingWeightsError"
    assert "hf download m-a-p/MERT-v1-95M" in failure["reason"]
    assert "1 pair(s) failed" in capsys.readouterr().err
