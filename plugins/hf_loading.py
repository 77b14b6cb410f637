"""Loading Hugging Face checkpoints for first-party encoder plugins.

Three sources, one code path: a local folder (``--weights-dir``), the Hugging Face cache / hub
at a pinned revision (``--weights pretrained``), or the same architecture with seeded random
weights (``--weights random``, a real control baseline). Never ``trust_remote_code``; weights
load from safetensors or with ``weights_only`` unpickling inside transformers. When the weights
are not available offline the error names the model, the environment variables and the command
to fetch them on a machine with network. Written only against embench's public API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embench import MissingWeightsError

RANDOM_INIT_SEED = 0


def local_checkpoint(model_id: str, weights_path: str | None) -> Path | None:
    """The folder in ``weights_path`` holding ``model_id``: the folder itself when it is a
    checkpoint, else ``<dir>/<name>`` or ``<dir>/<org>--<name>``; None when not given."""
    if not weights_path:
        return None
    root = Path(weights_path).expanduser()
    candidates = [root, root / model_id.split("/")[-1], root / model_id.replace("/", "--")]
    for folder in candidates:
        if (folder / "config.json").is_file() or any(folder.glob("*.safetensors")):
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise MissingWeightsError(
        f"--weights-dir {root} holds no checkpoint for {model_id} (looked in {tried}). Save one "
        f"there with `model.save_pretrained(...)` or `hf download {model_id} --local-dir "
        f"{root / model_id.split('/')[-1]}` on a machine with network."
    )


def missing_weights(model_id: str, revision: str | None, exc: Exception) -> MissingWeightsError:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    rev = f" --revision {revision}" if revision else ""
    return MissingWeightsError(
        f"Could not load pretrained weights for {model_id}"
        f"{f' at revision {revision}' if revision else ''}: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}\n"
        f"They are not in the Hugging Face cache (HF_HOME={hf_home}) and the hub cannot be "
        f"reached (offline, or HF_HUB_OFFLINE=1). On a machine with network run\n"
        f"    hf download {model_id}{rev}\n"
        f"and copy $HF_HOME/hub here, or save the checkpoint to a folder and pass "
        f"--weights-dir FOLDER. For a random-init control run, use --weights random."
    )


def load_model(model_cls: Any, model_id: str, revision: str | None, config: Any, weights: str,
               weights_path: str | None, **kwargs: Any) -> Any:
    """Build ``model_cls`` with ``config``: pretrained from a local folder or the hub cache, or
    seeded random weights. Returns the model in eval mode, on the CPU."""
    import torch

    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = model_cls(config)
        return model.eval()
    if weights != "pretrained":
        raise ValueError(f"weights must be 'pretrained' or 'random', not {weights!r}")
    local = local_checkpoint(model_id, weights_path) or hub_snapshot(model_id, revision)
    try:
        model = model_cls.from_pretrained(str(local), config=config, local_files_only=True,
                                          **kwargs)
    except (OSError, ValueError) as exc:
        raise missing_weights(model_id, revision, exc) from exc
    return model.eval()


def hub_snapshot(model_id: str, revision: str | None) -> Path:
    """The checkpoint folder in the Hugging Face cache, downloading it if the hub is reachable.

    One listing call that fails fast offline (``from_pretrained`` on a hub id retries for
    minutes). safetensors weights are preferred; ``pytorch_model.bin`` is fetched only for repos
    that have nothing else, and transformers unpickles it with ``weights_only=True``.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(model_id, revision=revision,
                                        allow_patterns=["*.json", "*.safetensors", "*.txt"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(snapshot_download(model_id, revision=revision,
                                            allow_patterns=["*.json", "pytorch_model*.bin"]))
    except Exception as exc:  # offline, unknown repo or revision, interrupted download
        raise missing_weights(model_id, revision, exc) from exc
    return folder


class HubRevision:
    """The hub commit an encoder's pretrained weights come from, resolved once and then kept.

    First-party encoders name a branch or nothing (a commit could not be confirmed offline), so
    the commit is read from the snapshot the Hugging Face cache holds, fetched first when the
    hub is reachable, exactly as loading would. The core keys the embedding cache by it, and
    ``load`` then reads that snapshot and no other, even if the hub moves on mid-run.
    """

    def __init__(self, model_id: str, revision: str | None) -> None:
        self.model_id = model_id
        self.revision = revision
        self.commit: str | None = None

    def resolve(self, weights: str, weights_path: str | None) -> str | None:
        """The commit for pretrained hub weights; None for random weights, for a
        ``--weights-dir`` checkpoint (the core fingerprints that folder itself), and when
        nothing is cached offline (loading then fails with :func:`missing_weights`'s advice)."""
        if weights != "pretrained" or weights_path:
            return None
        if self.commit is None:
            try:
                self.commit = hub_snapshot(self.model_id, self.revision).name
            except MissingWeightsError:
                return None
        return self.commit

    @property
    def to_load(self) -> str | None:
        """The revision ``load`` asks for: the resolved commit, else the declared revision."""
        return self.commit or self.revision


def attention_kwargs(device: Any) -> dict[str, str]:
    """Ask for SDPA explicitly on CUDA (so a missing kernel fails loudly rather than silently
    falling back); elsewhere leave transformers' own default, which is SDPA where supported."""
    return {"attn_implementation": "sdpa"} if getattr(device, "type", "cpu") == "cuda" else {}
