"""Run every (encoder, task) pair of a RunSpec and write one RunResult JSON.

Pairs are independent: a pair that fails is recorded with its reason and the run goes on. The
result file is rewritten atomically after every pair, so a crash or a kill keeps every score
already computed, and the embedding cache makes the rerun cheap.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from embench import provenance
from embench.encoder import Encoder
from embench.errors import EmbenchError, UnknownNameError, debug_enabled
from embench.plugins import Registry
from embench.results import (
    ItemScores,
    PairFailure,
    Preprocessing,
    RunResult,
    RunSpec,
    ScoreSummary,
    SkippedClip,
    TaskResult,
    run_json,
)
from embench.task import ClipSet, EvalContext, Evaluation, Task


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def with_windowing(encoder: Encoder, window_s: float | None, hop_s: float | None) -> Encoder:
    """A copy of ``encoder`` that cuts audio into ``window_s`` windows every ``hop_s`` seconds
    instead of its own defaults (both go into the cache key and the results)."""
    if window_s is None and hop_s is None:
        return encoder
    info = encoder.info
    window = window_s if window_s is not None else info.window_s
    if window is None:
        raise EmbenchError(f"--hop-s needs a window: {info.name} embeds whole clips by default; "
                           f"pass --window-s too.")
    if window * info.sample_rate < info.min_samples:
        raise EmbenchError(f"--window-s {window} is shorter than {info.name} accepts "
                           f"({info.min_samples / info.sample_rate:.3f} s).")
    if hop_s is not None and hop_s > window:
        raise EmbenchError(f"--hop-s {hop_s:g} is longer than {info.name}'s window ({window:g} s):"
                           f" the audio between windows would never be embedded; give a hop "
                           f"<= the window, or a longer --window-s.")
    clone = copy.copy(encoder)
    clone.info = dataclasses.replace(info, window_s=window, hop_s=hop_s)
    return clone


def protocols_for(spec: RunSpec, tasks: list[Task]) -> dict[str, str]:
    """Each task's protocol: ``spec.protocol`` where given (and valid), else the task default."""
    chosen = {}
    for task in tasks:
        protocol = spec.protocol or task.info.default_protocol
        if protocol not in task.info.protocols:
            raise UnknownNameError("protocol", protocol, task.info.protocols,
                                   of=f"task {task.name!r}")
        chosen[task.name] = protocol
    return chosen


def write_result(result: RunResult, path: Path) -> None:
    """Atomically, like every page embench writes: a reader never sees half a result file."""
    from embench.leaderboard import write_text_atomic

    write_text_atomic(path, run_json(result))


def resumable(previous: RunResult, path: Path) -> RunResult:
    """``previous`` (read from ``path``) ready to be continued by :func:`run`: same settings,
    the pairs it scored kept, the ones it has not scored (or that failed) to be run. Refused
    where its numbers could not be compared with the new ones."""
    from embench import __version__

    if previous.spec is None:
        raise EmbenchError(f"{path} records no run settings (spec), so it cannot be resumed; "
                           f"start a new run.")
    prov, commit = previous.provenance, provenance.git_commit()
    if prov.embench_version != __version__ or (prov.git_commit and commit
                                               and prov.git_commit != commit):
        raise EmbenchError(
            f"{path} was written by embench {prov.embench_version} (commit "
            f"{prov.git_commit or 'unknown'}), this is {__version__} (commit "
            f"{commit or 'unknown'}): one run must not mix scores of two versions. "
            f"Resume it with that version, or start a new run (cached embeddings are reused "
            f"where still valid).")
    resumed = previous.model_copy(deep=True)
    resumed.provenance.resumed_at.append(provenance.now())
    resumed.provenance.finished_at = None
    resumed.failures = []  # failed pairs are run again: their cause may be fixed by now
    return resumed


def run(spec: RunSpec, registry: Registry, *, argv: list[str] | None = None,
        log: Callable[[str], None] = print, show_progress: bool = True,
        resume: tuple[RunResult, Path] | None = None) -> tuple[RunResult, Path | None]:
    """Execute ``spec``; returns the RunResult and the path of its JSON file (``None`` on the
    worker ranks of a torchrun launch, which write no results: see :mod:`embench.distributed`).

    ``resume``: a result from :func:`resumable` and its file; the run keeps its id and file and
    scores only the pairs that file has no result for (``spec`` is then its spec)."""
    from embench import distributed
    from embench.devices import resolve_device

    encoders = [with_windowing(registry.encoder(n), spec.window_s, spec.hop_s)
                for n in spec.encoders]
    tasks = [registry.task(n) for n in spec.tasks]
    protocols = protocols_for(spec, tasks)
    ranks, device_spec = distributed.from_environment(spec.device)
    try:
        device = resolve_device(device_spec)
        if not ranks.is_main:  # workers extract their shards; rank 0 reports
            worker_log = log
            log = lambda m: worker_log(f"[rank {ranks.rank}] {m}")  # noqa: E731
            show_progress = False
        spec = spec.model_copy(update={"world_size": ranks.world_size})
        if resume is None:
            run_id = new_run_id()
            out_dir = Path(spec.output_dir)
            path = out_dir / f"run-{run_id}.json"
            result = RunResult(run_id=run_id, provenance=provenance.collect(str(device), argv),
                               spec=spec)
        else:
            result, path = resume
            out_dir = path.parent
        save = (lambda: write_result(result, path)) if ranks.is_main else (lambda: None)
        try:
            save()
        except OSError as exc:
            raise EmbenchError(f"Cannot write results to {out_dir}: {exc.strerror or exc}. "
                               f"Choose a writable folder with --output-dir.") from None
        try:
            _run_pairs(spec, result, save, encoders, tasks, protocols, device, log,
                       show_progress, ranks, out_dir)
        except KeyboardInterrupt:
            save()
            if ranks.is_main:
                log(f"Interrupted: the {len(result.results)} pair(s) scored so far are saved in "
                    f"{path}. `embench run --resume {path}` scores the rest (cached embeddings "
                    f"are reused; a pair cut off mid-way starts again).")
            raise
        result.provenance.finished_at = provenance.now()
        save()
    finally:
        ranks.close()
    return result, (path if ranks.is_main else None)


def _run_pairs(spec: RunSpec, result: RunResult, save: Callable[[], None], encoders, tasks,
               protocols, device, log, show_progress, ranks, out_dir: Path) -> None:
    pair_root = out_dir / f"run-{result.run_id}"
    done = {(r.encoder, r.task) for r in result.results}  # a resumed run keeps these
    if done:
        log(f"resuming run {result.run_id}: {len(done)} pair(s) already scored")
    encoders = [e for e in encoders if any((e.name, t.name) not in done for t in tasks)]
    tasks = [t for t in tasks if any((e.name, t.name) not in done for e in encoders)]

    clipsets: dict[str, ClipSet] = {}
    for task in tasks:
        error: Exception | None = None
        try:
            clips = task.load(Path(spec.data_dir))
            if clips.dataset_revision is None:
                clips.dataset_revision = task.info.dataset_revision
        except Exception as exc:
            error = exc
        # every rank keeps or drops the task together, or the ranks' pairs would not line up
        failed = ranks.failures(None if error is None else f"{type(error).__name__}: {error}")
        if error is None and failed:
            error = EmbenchError(f"loading {task.name} failed on " + "; ".join(failed))
        if error is None:
            clipsets[task.name] = clips
            continue
        for encoder in encoders:
            if (encoder.name, task.name) not in done:
                _record_failure(result, encoder.name, task.name, protocols[task.name], error,
                                log)
    for encoder in encoders:
        for task in tasks:
            if task.name not in clipsets or (encoder.name, task.name) in done:
                continue
            try:
                scored = _run_pair(spec, encoder, task, clipsets[task.name], protocols[task.name],
                                   device, pair_root, log, show_progress, ranks)
                if scored is not None:
                    result.results.append(scored)
            except Exception as exc:
                _record_failure(result, encoder.name, task.name, protocols[task.name], exc, log)
            save()
        _record_routes(result, encoder, ranks)
        if encoder.loaded:
            encoder.unload()
            if device.type == "cuda":
                import torch

                torch.cuda.empty_cache()


def _record_routes(result: RunResult, encoder, ranks) -> None:
    """Keep what the encoder's ``auto`` kernel routes chose (optional ``route_notes()``).

    Under torchrun each rank times its own routes, so its shards may differ from another's at
    rounding level; every rank meets here once per encoder, and a decision of another rank that
    rank 0 did not make is kept too, as ``rank r: ...`` (the README says how to force one
    route everywhere)."""
    notes = getattr(encoder, "route_notes", None)
    lines = notes() if callable(notes) and encoder.loaded else []
    per_rank = ranks.gather(lines)
    main = {_decision(line) for line in per_rank[0]}
    lines = [*per_rank[0], *(f"rank {rank}: {line}" for rank, rank_lines in enumerate(per_rank)
                             for line in rank_lines if rank and _decision(line) not in main)]
    if lines:
        known = result.provenance.kernel_routes.setdefault(encoder.name, [])
        known.extend(line for line in lines if line not in known)


def _decision(note: str) -> str:
    """``"part: route for [shape] dtype"`` of a route note ``"part: route for B x [shape]
    dtype (times)"``: what was chosen for which input, not the batch or the times."""
    return re.sub(r" for \d+ x ", " for ", note.split(" (", 1)[0])


def _record_failure(result: RunResult, encoder: str, task: str, protocol: str,
                    exc: Exception, log: Callable[[str], None]) -> None:
    if debug_enabled() or not isinstance(exc, EmbenchError):
        traceback.print_exception(exc, file=sys.stderr)
    reason = str(exc) or type(exc).__name__
    log(f"FAILED {encoder} on {task}: {reason}")
    result.failures.append(PairFailure(encoder=encoder, task=task, protocol=protocol,
                                       error_type=type(exc).__name__, reason=reason))


def _run_pair(spec, encoder, task, clips: ClipSet, protocol: str, device, pair_root: Path,
              log, show_progress, ranks) -> TaskResult | None:
    """Score one pair; ``None`` on a worker rank (it only extracts its shard)."""
    from embench.extract import extract, weights_revision
    from embench.precision import default_for

    start = time.perf_counter()
    features = None
    extract_s: float | None = None
    needs_features = task.requires_features(protocol)
    if not needs_features and not ranks.is_main:
        return None  # fine-tuning protocols run on rank 0 alone
    weights = spec.weights if encoder.info.random_init else "pretrained"
    if weights != spec.weights:
        log(f"{encoder.name} has nothing to initialise at random (EncoderInfo.random_init is "
            f"False): --weights random leaves it as it is, so its row is its 'pretrained' one")
    revision = weights_revision(encoder, weights, spec.weights_path)  # before any load

    def extract_(shard):
        return extract(encoder, clips, Path(spec.cache_dir), device=device,
                       frame_rate=spec.frame_rate, batch_size=spec.batch_size,
                       compile=spec.compile, num_workers=spec.num_workers, weights=weights,
                       weights_path=spec.weights_path, show_progress=show_progress, log=log,
                       shard=shard, precision=spec.precision)

    if needs_features and ranks.active:
        error = None
        try:
            extract_(ranks.shard())
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        failed = ranks.failures(error)
        if failed:
            raise EmbenchError(f"extraction failed on {len(failed)} rank(s): " + "; ".join(failed))
        if not ranks.is_main:
            return None
    if needs_features:
        # single process: everything; rank 0 after a sharded extraction: finds every shard
        # cached (clips that failed to decode on another rank are retried, and fail fast)
        features = extract_(None)
        extract_s = round(time.perf_counter() - start, 3)
        if not features.clip_ids:
            raise EmbenchError(f"no clip of {task.name} could be embedded by {encoder.name}; "
                               "first reasons: " + "; ".join(f"{cid}: {why}" for cid, why
                                                             in list(features.skipped.items())[:3]))
    output_dir = pair_root / task.name / encoder.name
    output_dir.mkdir(parents=True, exist_ok=True)
    ctx = EvalContext(clips=clips, protocol=protocol, seeds=list(spec.seeds), device=device,
                      output_dir=output_dir, features=features,
                      encoder=None if features is not None else encoder,
                      weights=weights, weights_path=spec.weights_path, log=log,
                      captioner=spec.captioner)
    try:
        evaluation = task.evaluate(ctx)
    except AttributeError as exc:
        if features is not None or "NoneType" not in str(exc):
            raise
        raise EmbenchError(
            f"task {task.name!r} failed in protocol {protocol!r}: {exc}. If this protocol reads "
            f"cached embeddings, list it in the task's TaskInfo.requires_features: the core "
            f"extracts them (ctx.features) only for the protocols named there.") from exc
    _check_evaluation(task, evaluation, list(spec.seeds), clips)
    info = encoder.info
    skipped = dict(features.skipped) if features is not None else {}
    skipped.update(evaluation.skipped)
    used = set(features.clip_ids) if features is not None else {c.id for c in clips}
    used -= set(skipped)
    result = TaskResult(
        encoder=info.name, encoder_revision=revision, weights=weights,
        task=task.name, task_version=task.info.version, dataset_id=clips.dataset_id,
        dataset_revision=clips.dataset_revision, protocol=protocol, split_id=clips.split_id,
        main_score=task.info.main_score, higher_is_better=task.info.higher_is_better,
        seeds=list(spec.seeds), scores=evaluation.scores,
        summary={m: ScoreSummary.from_values(v) for m, v in evaluation.scores.items()},
        train_scores=evaluation.train_scores, baselines=evaluation.baselines,
        n_clips={s: sum(c.split == s and c.id in used for c in clips) for s in clips.counts()},
        skipped=[SkippedClip(clip_id=c, reason=r) for c, r in skipped.items()],
        missing=[SkippedClip(clip_id=c, reason=r) for c, r in clips.missing],
        preprocessing=Preprocessing(sample_rate=info.sample_rate, window_s=info.window_s,
                                    hop_s=info.hop_s, frame_rate=spec.frame_rate,
                                    compute_dtype=(features.cache.key.compute_dtype
                                                   if features else default_for(device)),
                                    cache_key=features.cache.key.digest() if features else None),
        flags=evaluation.flags, details=evaluation.details, item_scores=evaluation.item_scores,
        duration_s=round(time.perf_counter() - start, 3), extract_s=extract_s,
    )
    _write_plots(result, output_dir, features, clips, log)
    return result


def _write_plots(result: TaskResult, output_dir: Path, features, clips: ClipSet, log) -> None:
    """Confusion matrix, layer curve and PCA beside the pair's outputs, when matplotlib is
    installed (the ``plots`` extra); a plotting problem never costs the scores."""
    from embench import plots

    if not plots.is_classification(result):
        return
    try:
        plots.write_classification_plots(result, output_dir, features, clips)
    except EmbenchError as exc:  # matplotlib missing: say how to get the pictures
        log(f"no plots for {result.encoder} on {result.task}: {exc}")
    except Exception as exc:
        log(f"plotting {result.encoder} on {result.task} failed ({type(exc).__name__}: {exc}); "
            f"the scores are unaffected")


def _check_evaluation(task: Task, evaluation: Evaluation, seeds: list[int],
                      clips: ClipSet) -> None:
    main, n_seeds = task.info.main_score, len(seeds)
    if main not in evaluation.scores:
        raise EmbenchError(f"task {task.name!r} returned no {main!r} score (a plugin bug)")
    for metric, values in evaluation.scores.items():
        if len(values) != n_seeds:
            raise EmbenchError(f"task {task.name!r} returned {len(values)} {metric!r} values "
                               f"for {n_seeds} seeds (a plugin bug)")
    items = evaluation.item_scores
    if items is None:
        return
    if not isinstance(items, ItemScores):
        raise EmbenchError(f"task {task.name!r} returned item_scores of type "
                           f"{type(items).__name__}; it must be an embench.ItemScores (a plugin "
                           f"bug)")
    test = {c.id for c in clips.split("test")}
    problems = items.problems(seeds, evaluation.scores)
    problems += [f"clip {cid!r} is not a test clip" for cid in items.clip_ids
                 if cid not in test][:1]
    if problems:
        raise EmbenchError(f"task {task.name!r} returned item scores that do not give its "
                           f"scores: {'; '.join(problems[:3])} (a plugin bug)")
