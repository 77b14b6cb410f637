"""The captioning model: frozen audio frames -> Linear + LayerNorm -> T5 (``inputs_embeds``).

Why T5 with ``inputs_embeds``: the encoder-decoder runs unchanged over projected audio frames,
so the same code trains a small model from scratch (toy tasks, tests) or fine-tunes a
pretrained ``t5-small`` (real captioning), and generation is transformers' own beam search.
The word-level tokenizer for ``scratch`` is built from training captions only, so no
validation or test word can leak into the vocabulary.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embench.errors import EmbenchError, MissingWeightsError

IGNORE_INDEX = -100  # label positions the cross-entropy loss skips (padding)
# words (keeping inner hyphens/apostrophes and "#" as in "F#") or single punctuation marks, which
# sacrebleu's 13a tokenizer also scores as tokens
_WORD = re.compile(r"[a-z0-9#]+(?:['-][a-z0-9#]+)*|[^\w\s]")
_SPACE_BEFORE = re.compile(r" ([.,:;!?%)])")
SCRATCH_CONFIG = dict(d_model=128, d_kv=32, num_layers=2, num_decoder_layers=2, num_heads=4,
                      d_ff=256, dropout_rate=0.1)


class WordTokenizer:
    """Lower-cased regex words and punctuation marks; ids 0 = pad (also T5's decoder start),
    1 = eos, 2 = unk.

    Words are ordered by training frequency (ties alphabetically) so the vocabulary, and thus
    the seeded initialisation, does not depend on clip order."""

    pad_token_id, eos_token_id, unk_token_id = 0, 1, 2
    specials = ("<pad>", "</s>", "<unk>")

    def __init__(self, captions: Sequence[str]):
        counts = Counter(w for c in captions for w in self.words(c))
        ordered = sorted(counts, key=lambda w: (-counts[w], w))
        self.vocab: list[str] = [*self.specials, *ordered]
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def words(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Word ids followed by eos (T5 learns to stop by predicting eos)."""
        return [self.index.get(w, self.unk_token_id) for w in self.words(text)] + [
            self.eos_token_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Words up to the first eos, specials dropped, joined by spaces (none before
        closing punctuation)."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_token_id:
                break
            if i >= len(self.specials):
                out.append(self.vocab[i])
        return _SPACE_BEFORE.sub(r"\1", " ".join(out))


class HFTokenizer:
    """The same two methods over a pretrained transformers tokenizer (eos appended by it)."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.eos_token_id = tokenizer.eos_token_id

    def __len__(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        ids = list(self.tok(text, add_special_tokens=True)["input_ids"])
        if not ids or ids[-1] != self.eos_token_id:
            ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.tok.decode(list(ids), skip_special_tokens=True).split())


def collate(feats: Sequence[np.ndarray], labels: Sequence[Sequence[int]] | None = None
            ) -> dict[str, torch.Tensor]:
    """Pad ``[L, F_i, D]`` frame stacks to the batch's longest clip (``attention_mask`` marks
    real frames) and label ids to the longest caption with :data:`IGNORE_INDEX`, so padding
    neither attends nor counts in the loss."""
    n, n_layers, dim = len(feats), feats[0].shape[0], feats[0].shape[2]
    longest = max(f.shape[1] for f in feats)
    x = torch.zeros(n, n_layers, longest, dim, dtype=torch.float32)
    mask = torch.zeros(n, longest, dtype=torch.long)
    for i, f in enumerate(feats):
        x[i, :, : f.shape[1]] = torch.from_numpy(f)
        mask[i, : f.shape[1]] = 1
    batch = {"feats": x, "attention_mask": mask}
    if labels is not None:
        y = torch.full((n, max(len(s) for s in labels)), IGNORE_INDEX, dtype=torch.long)
        for i, s in enumerate(labels):
            y[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        batch["labels"] = y
    return batch


class AudioCaptioner(nn.Module):
    """Softmax layer mix (one weight when a single layer is used) -> Linear -> LayerNorm -> T5."""

    def __init__(self, t5: nn.Module, n_layers: int, dim: int):
        super().__init__()
        self.mix = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Linear(dim, t5.config.d_model)
        self.norm = nn.LayerNorm(t5.config.d_model)
        self.t5 = t5

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.mix, 0).to(feats.dtype)
        return self.norm(self.proj(torch.einsum("l,blfd->bfd", weights, feats)))

    def forward(self, feats: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> torch.Tensor:
        out = self.t5(inputs_embeds=self.embed(feats), attention_mask=attention_mask,
                      labels=labels)
        return out.loss

    @torch.no_grad()
    def generate(self, feats: torch.Tensor, attention_mask: torch.Tensor, num_beams: int,
                 max_new_tokens: int) -> torch.Tensor:
        return self.t5.generate(inputs_embeds=self.embed(feats), attention_mask=attention_mask,
                                num_beams=num_beams, max_new_tokens=max_new_tokens,
                                do_sample=False, early_stopping=True)


def missing_t5(name: str, exc: Exception) -> MissingWeightsError:
    """The offline message: which model, where it was looked for, and how to fetch it."""
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return MissingWeightsError(
        f"Could not load the captioner {name}: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}\n"
        f"It is not in the Hugging Face cache (HF_HOME={hf_home}) and the hub cannot be reached "
        f"(offline, or HF_HUB_OFFLINE=1). On a machine with network run\n"
        f"    hf download {name}\n"
        f"and copy $HF_HOME/hub here, or save the model and its tokenizer with save_pretrained "
        f"to a folder and pass it as `embench run --captioner FOLDER`. For a model trained from "
        f"scratch use --captioner scratch."
    )


def local_captioner(captioner: str) -> Path | None:
    """The folder ``captioner`` names, or None for a hub id (or ``"scratch"``). A name written
    as a path (``./``, ``/``, ``~``) that is not a folder is an error, never a hub id."""
    local = Path(captioner).expanduser()
    if local.is_dir():
        return local
    if captioner.startswith((".", "/", "~")):
        raise EmbenchError(f"captioner folder {local} does not exist; give a folder saved with "
                           f"save_pretrained (model and tokenizer), a hub id, or 'scratch'")
    return None


def captioner_commit(captioner: str) -> str | None:
    """The hub commit a captioner named by hub id loads from: its snapshot in the local
    Hugging Face cache, which :func:`build_t5` reads (``local_files_only``). None for
    ``"scratch"``, a local folder, or a model not cached. Recorded beside the captioner's
    name, so a score says which weights decoded its captions."""
    if captioner == "scratch" or local_captioner(captioner) is not None:
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(captioner, local_files_only=True)).name
    except Exception:  # not cached (build_t5 then explains), or not a valid repo id
        return None


def build_t5(captioner: str, train_captions: Sequence[str], seed: int) -> tuple[nn.Module, Any]:
    """(T5ForConditionalGeneration, tokenizer) for ``captioner``: ``"scratch"`` (seeded small
    T5 + :class:`WordTokenizer`), a local ``save_pretrained`` folder, or a hub id read from the
    local cache only (``local_files_only``: a hub id must not hang retrying offline)."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    if captioner == "scratch":
        tok = WordTokenizer(train_captions)
        config = T5Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                          **SCRATCH_CONFIG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5ForConditionalGeneration(config)
        return model, tok
    source = str(local_captioner(captioner) or captioner)
    try:
        model = T5ForConditionalGeneration.from_pretrained(source, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise missing_t5(captioner, exc) from exc
    if model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = tok.pad_token_id
    return model, HFTokenizer(tok)
