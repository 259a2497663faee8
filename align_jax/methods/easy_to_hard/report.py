"""The Easy-to-Hard world report: goals with their margins, per-level tables across seeds,
inference-compute curves (PNG)."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from align_jax import fs
from align_jax.data.jsonl import read_jsonl
from align_jax.pipeline.reports import markdown_table, mean_std, plot_lines, write_report
from align_jax.pipeline.stages import stage_seconds, stage_time_rows

POLICIES = {"samples_small": "small", "samples_large": "large"}
# The diagnostics' scores by the SFT stage whose language model gives them.
SCORE_NAMES = {"sft": "small policy's likelihood", "sft_large": "large policy's likelihood"}
TABLE_SIZES = (1, 4, 16, 64, 256)


def _accuracy(results: Mapping[str, Any], policy: str, group: str, strategy: str, n: int
              ) -> float:
  curves = results["rerank"][policy]
  return curves["groups"][group]["accuracy"][strategy][curves["sizes"].index(n)]


def report_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
  """One seed's table: each policy's majority, weighted and best-of-N (PRM, min) at the
  largest N."""
  rows = []
  for policy, name in POLICIES.items():
    n = results["rerank"][policy]["sizes"][-1]
    for strategy in ("majority", "weighted/prm/min", "best_of_n/prm/min", "weighted/orm/outcome",
                     "weighted/iprm/min"):
      if strategy not in results["rerank"][policy]["groups"]["easy"]["accuracy"]:
        continue
      rows.append({"policy": name, "strategy": strategy, "N": n,
                   "easy": _accuracy(results, policy, "easy", strategy, n),
                   "hard": _accuracy(results, policy, "hard", strategy, n)})
  return rows


def _difference(per_seed: Mapping[int, Mapping[str, Any]], a, b) -> dict[str, float]:
  """Mean, std and standard error over seeds of a(results) - b(results)."""
  values = np.array([a(r) - b(r) for r in per_seed.values()], np.float64)
  std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
  return {"mean": float(values.mean()), "std": std, "se": std / np.sqrt(len(values)),
          "values": values.tolist()}


def _margin(d: Mapping[str, float]) -> float:
  """The mean in standard errors (nan with one seed)."""
  if not np.isfinite(d["se"]):
    return float("nan")
  return d["mean"] / d["se"] if d["se"] > 0 else float("inf") * np.sign(d["mean"])


def _verdict(d: Mapping[str, float]) -> str:
  margin = _margin(d)
  if np.isnan(margin):
    return "one seed: no standard error"
  return f"{margin:+.1f} SE: **{'met' if margin > 2 else 'not met'}**"


def _fmt(d: Mapping[str, float]) -> str:
  return (f"{d['mean']:+.3f} (std {d['std']:.3f}, SE {d['se']:.3f}; per seed "
          + ", ".join(f"{v:+.3f}" for v in d["values"]) + ")")


def _rl_accuracy(results: Mapping[str, Any], policy: str, mode: str, levels: Sequence[int]
                 ) -> float:
  row = next(r for r in results["rl_eval"]["rows"] if r["policy"] == policy and r["mode"] == mode)
  return float(np.mean([row[f"level {lv}"] for lv in levels]))


def _separation_rows(workdir: str, per_seed: Mapping[int, Mapping[str, Any]], rerank,
                     easy_levels: Sequence[int]) -> list[dict[str, Any]]:
  """AUC of each evaluator's solution scores on the small policy's samples (mean ± std
  over seeds), from the rerank stage's cached scores."""
  from align_jax.methods.easy_to_hard.pipeline import (first_samples, separation,
                                                        solution_scores, step_separation)
  values: dict[str, dict[str, list[float]]] = {}
  for seed, results in per_seed.items():
    every = list(read_jsonl(results["samples_small"]["path"]))
    scored = {}
    for name in ("samples_small_scores.json", "samples_small_likelihoods.json"):
      path = fs.join(workdir, f"seed_{seed}", "rerank", name)
      if fs.exists(path):  # runs before the likelihood diagnostic have none
        with fs.open(path) as f:
          scored.update({SCORE_NAMES.get(k, k): v for k, v in json.load(f).items()})
    for evaluator in scored:
      # The likelihood diagnostic may score each question's first samples only.
      rows = first_samples(every, len(scored[evaluator]) // len(every))
      how = "outcome" if evaluator == "orm" else rerank.aggregation
      flat = solution_scores(scored[evaluator], evaluator, how)
      found = separation(rows, flat.reshape(len(rows), -1), easy_levels)
      it = iter(s["steps"] for s in scored[evaluator])
      steps = step_separation(rows, [[next(it) for _ in r["samples"]] for r in rows],
                              easy_levels)
      entry = values.setdefault(f"{evaluator} ({how})", {})
      for group in ("easy", "hard"):
        for key in ("within", "overall"):
          entry.setdefault(f"{group}: {key}", []).append(found[group][key])
        entry.setdefault(f"{group}: questions", []).append(found[group]["questions"])
        entry.setdefault(f"{group}: step", []).append(steps[group]["step"])
        entry.setdefault(f"{group}: prefixes", []).append(steps[group]["prefixes"])
  counts = ("questions", "prefixes")
  return [{"evaluator": name, **{k: (f"{np.mean(v):.0f}" if k.endswith(counts)
                                     else mean_std(v)) for k, v in entry.items()}}
          for name, entry in values.items()]


def write_world_report(workdir: str, per_seed: Mapping[int, Mapping[str, Any]], rerank,
                       world, seconds: float, evaluator_backbone: str = "sft") -> str:
  """report.md with the goals first, then tables, curves and the set-up."""
  backbone = {"sft": "small", "sft_large": "large"}[evaluator_backbone]
  figures = fs.join(workdir, "report")
  fs.makedirs(figures)
  first = next(iter(per_seed.values()))
  sizes = first["rerank"]["samples_small"]["sizes"]
  hard_levels, easy_levels = world.hard_levels, world.easy_levels
  agg = rerank.aggregation
  weighted, bon = f"weighted/prm/{agg}", f"best_of_n/prm/{agg}"
  small = first["rerank"]["samples_small"]["groups"]["hard"]["accuracy"]
  implicit = f"weighted/iprm/{agg}" in small  # runs before the implicit PRM have none
  goals = []
  for evaluator, label in (("prm", "PRM"), ("iprm", "implicit PRM")):
    if evaluator == "iprm" and not implicit:
      continue
    for n in [n for n in sizes if n >= 16]:
      d = _difference(
          per_seed, lambda r: _accuracy(r, "samples_small", "hard", f"weighted/{evaluator}/{agg}",
                                        n),
          lambda r: _accuracy(r, "samples_small", "hard", "majority", n))
      goals.append({"goal": f"levels {hard_levels}: weighted voting ({label}, {agg}) minus "
                            f"majority, N={n}", "difference": _fmt(d), "verdict": _verdict(d)})
  for strategy in ("weighted", "best_of_n"):
    n = sizes[-1]
    d = _difference(per_seed,
                    lambda r: _accuracy(r, "samples_small", "hard", f"{strategy}/prm/{agg}", n),
                    lambda r: _accuracy(r, "samples_small", "hard", f"{strategy}/orm/outcome", n))
    goals.append({"goal": f"levels {hard_levels}: {strategy} PRM ({agg}) minus ORM, N={n}",
                  "difference": _fmt(d), "verdict": _verdict(d)})
  trained = {row["policy"] for row in first["rl_eval"]["rows"]}
  for policy, label in (("ppo_process", "PRM"), ("ppo_implicit", "implicit PRM")):
    if policy not in trained:
      continue
    for mode in ("greedy", "sampled"):
      for baseline in ("sft", "ppo_outcome"):
        d = _difference(per_seed, lambda r: _rl_accuracy(r, policy, mode, hard_levels),
                        lambda r: _rl_accuracy(r, baseline, mode, hard_levels))
        goals.append({"goal": f"levels {hard_levels}: PPO with the easy-trained {label} minus "
                              f"{baseline} ({mode})", "difference": _fmt(d),
                      "verdict": _verdict(d)})

  # Reranking tables: mean ± std over seeds.
  tables = []
  for policy, name in POLICIES.items():
    for group, levels in (("easy", easy_levels), ("hard", hard_levels)):
      rows = []
      shown = [n for n in TABLE_SIZES if n in sizes]
      for strategy in first["rerank"][policy]["groups"][group]["accuracy"]:
        row = {"strategy": strategy}
        for n in shown:
          row[f"N={n}"] = mean_std([_accuracy(r, policy, group, strategy, n)
                                    for r in per_seed.values()])
        rows.append(row)
      questions = first["rerank"][policy]["groups"][group]["questions"]
      tables.append((f"Reranking, {name} policy, levels {list(levels)} ({questions} questions "
                     "per seed)", markdown_table(rows, ["strategy"] + [f"N={n}" for n in shown])))

  # RL table per level.
  levels = sorted(int(k.split()[1]) for k in first["rl_eval"]["rows"][0] if k.startswith("level"))
  rl_rows = []
  for row0 in first["rl_eval"]["rows"]:
    entry = {"policy": row0["policy"], "mode": row0["mode"]}
    for lv in levels:
      entry[f"level {lv}"] = mean_std([next(r for r in res["rl_eval"]["rows"]
                                            if r["policy"] == row0["policy"]
                                            and r["mode"] == row0["mode"])[f"level {lv}"]
                                       for res in per_seed.values()])
    rl_rows.append(entry)
  # Every PPO policy against SFT on the hard levels (the exact-reward run as a reference).
  labels = {"ppo_outcome": "final-answer reward, easy questions",
            "ppo_process": "easy-trained PRM's process reward",
            "ppo_implicit": "easy-trained implicit PRM's process reward",
            "ppo_oracle": "exact answer reward on every level (a perfect outcome evaluator)"}
  rl_vs_sft = []
  for policy in (p for p in labels if p in trained):
    entry = {"PPO": f"{policy}: {labels[policy]}"}
    for mode in ("greedy", "sampled"):
      d = _difference(per_seed, lambda r: _rl_accuracy(r, policy, mode, hard_levels),
                      lambda r: _rl_accuracy(r, "sft", mode, hard_levels))
      entry[mode] = f"{_fmt(d)}: {_margin(d):+.1f} SE"
    rl_vs_sft.append(entry)

  # Curves.
  curves = []
  for group, levels_ in (("easy", easy_levels), ("hard", hard_levels)):
    for axis in ("samples", "tokens"):
      lines = []
      for policy, name in POLICIES.items():
        for strategy, label in (("majority", "majority"), (weighted, f"weighted PRM {agg}"),
                                (bon, f"best-of-N PRM {agg}"),
                                (f"weighted/iprm/{agg}", f"weighted implicit PRM {agg}")):
          if strategy not in first["rerank"][policy]["groups"][group]["accuracy"]:
            continue
          ys = np.array([[_accuracy(r, policy, group, strategy, n) for n in sizes]
                         for r in per_seed.values()])
          tokens = np.mean([r["rerank"][policy]["groups"][group]["tokens_per_sample"]
                            for r in per_seed.values()])
          xs = list(sizes) if axis == "samples" else [n * tokens for n in sizes]
          lines.append((f"{name}: {label}", xs, ys.mean(0).tolist(), ys.std(0).tolist()))
      path = fs.join(figures, f"{group}_{axis}.png")
      plot_lines(path, lines, f"Levels {list(levels_)}: accuracy vs "
                 + ("samples per question" if axis == "samples" else "generated tokens"),
                 "N (samples)" if axis == "samples" else "generated tokens per question",
                 "accuracy", logx=True, xticks=sizes if axis == "samples" else None)
      curves.append(f"![{group} {axis}](report/{group}_{axis}.png)")

  separation_rows = _separation_rows(workdir, per_seed, rerank, easy_levels)
  check_rows = []
  for name in first["rerank"].get("first_step_check", {}):
    entry = {"score": SCORE_NAMES.get(name.removeprefix("likelihood/"), name)}
    for group in ("easy", "hard"):
      for kind in ("result", "rest"):
        entry[f"{group}: {kind}"] = mean_std([r["rerank"]["first_step_check"][name][group][kind]
                                              for r in per_seed.values()])
    check_rows.append(entry)

  # Runs before the RL test questions evaluated on the `eval` split.
  test = first["rl_eval"].get("questions")
  rl_questions = ("the held-out questions" if test is None else
                  f"{test // len(levels)} held-out test questions per level and seed, none in "
                  "any split")
  setup = []
  for seed, r in per_seed.items():
    stage_names = list(r)
    setup.append({
        "seed": seed, "held-out questions in training": r["world"]["heldout_overlap"],
        **({"RL test questions in training": r["rl_eval"]["overlap"]} if test else {}),
        "label samples correct": r["label_samples"]["sample_accuracy"],
        "PRM step labels positive": r["evaluator_data"]["positive_share"]["prm"],
        "PRM eval acc": r["prm"]["eval_accuracy"], "ORM eval acc": r["orm"]["eval_accuracy"],
        "OPRM eval acc": r["oprm"]["eval_accuracy"],
        **({"implicit PRM eval pair acc": r["iprm"]["eval_accuracy"]} if "iprm" in r else {}),
        "small samples correct": r["rerank"]["samples_small"]["sample_accuracy"],
        "large samples correct": r["rerank"]["samples_large"]["sample_accuracy"],
        "seconds": round(sum(stage_seconds(fs.join(workdir, f"seed_{seed}"),
                                           stage_names).values()))})
  time_rows = stage_time_rows(workdir, list(per_seed), list(first))
  return write_report(fs.join(workdir, "report.md"),
                      "align_jax Easy-to-Hard: evaluators trained on easy problems, used on "
                      "hard ones", [
      ("Goals (small policy; differences are mean over seeds, SE = std / sqrt(seeds))",
       markdown_table(goals, ["goal", "difference", "verdict"])),
      *tables,
      (f"RL: accuracy per level ({rl_questions}; greedy and T=1 samples)",
       markdown_table(rl_rows, ["policy", "mode"] + [f"level {lv}" for lv in levels])
       + f"\n\nEach PPO policy minus SFT on levels {hard_levels} (mean over the levels; "
       "over seeds: mean, std, standard error and per seed; then the mean in standard "
       "errors):\n\n"
       + markdown_table(rl_vs_sft, ["PPO", "greedy", "sampled"])),
      ("How well the evaluators tell right from wrong (AUC on the small policy's samples)",
       "`within`: the mean over questions with both right and wrong samples of the chance "
       "that a right one scores above a wrong one (what reranking needs); `overall`: the "
       "same over all samples pooled, which a score can earn by knowing which questions are "
       "hard; `questions`: per seed, how many questions had both; `step`: among samples of "
       "one question that share every step before a step and are right so far, the chance "
       "that the right version of that step scores above a wrong one (the step's own score; "
       "0.5 when the evaluator only knows where errors are likely, not whether this step is "
       "one); `prefixes`: per seed, how many such shared prefixes had both.\n\n"
       + markdown_table(separation_rows, list(separation_rows[0]))
       + "\n\nThe policies' likelihood rows score each step by the mean log-probability of "
       "its tokens under that policy's own language model (no training on labels): how "
       "much of the step check the models already hold"
       + (f"; they cover each question's first {rerank.likelihood_samples} samples"
          if rerank.likelihood_samples and rerank.likelihood_samples < rerank.num_samples
          else "") + "."),
      *([("Gold first steps against corrupted ones (held-out questions)",
          "For each held-out question with two or more operations: its gold solution "
          "against the same solution with a wrong first step, `result` one too high or the "
          "operations left (`rest`) miscopied in their last digit; the share of questions "
          "whose gold first step scores higher (ties count half; 0.5 for a score that "
          "knows only the question).\n\n"
          + markdown_table(check_rows, list(check_rows[0])))] if check_rows else []),
      ("Inference-compute curves (mean ± std over seeds)", "\n\n".join(curves)),
      ("Set-up per seed", markdown_table(setup, list(setup[0]))),
      ("Where the time goes", markdown_table(time_rows, ["stage", "seconds (mean over seeds)",
                                                         "slowest seed"])),
      ("What ran", f"{len(per_seed)} seed(s); policies trained from scratch on gold solutions "
                   f"of levels {list(easy_levels)} only; the evaluators (PRM, ORM, OPRM) on the "
                   f"small policy's own samples of levels {list(easy_levels)}, labelled by the "
                   f"exact checker, each on the {backbone} policy's backbone"
                   + (", and the implicit PRM (that backbone's language model trained by DPO "
                      "on pairs of a label question's right and wrong samples, its step score "
                      "the log-ratio to the backbone summed up to the step)" if implicit
                      else " (the implicit PRM left out)")
                   + f"; reranking of N "
                   f"samples per held-out question at T={rerank.temperature}, each "
                   f"N < {sizes[-1]} averaged over {rerank.subsets} random subsets. "
                   f"Stage time over all seeds {sum(r['seconds'] for r in setup):,} s "
                   f"(this invocation {seconds:.0f} s: stages completed earlier are reused)."),
  ])
