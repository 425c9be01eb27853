"""report.json + report.html: a self-contained page (plots embedded as base64 PNG, also written beside it
under plots/) that opens in a browser with no server. Every piece of model text is HTML-escaped."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

from rlhaif.data.io import atomic_write, read_jsonl_tolerant


def model_battles(scores: dict[str, list[float]]) -> list[tuple[str, str, float]]:
    """Per prompt, every pair of models is a battle decided by the higher score: (a, b, 1.0 | 0.5 | 0.0)."""
    names = list(scores)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for sa, sb in zip(scores[a], scores[b]):
                out.append((a, b, 1.0 if sa > sb else 0.0 if sa < sb else 0.5))
    return out


def leaderboard(scores: dict[str, list[float]], rounds: int, seed: int) -> tuple[list[dict] | None, str | None]:
    """Bradley–Terry ratings of the models with bootstrap CIs, by ``rlhaif.feedback.aggregate``."""
    if len(scores) < 2:
        return None, "one model only: no leaderboard"
    try:
        from rlhaif.feedback import aggregate
    except ImportError:
        return None, "rlhaif.feedback.aggregate is not available: no Bradley-Terry leaderboard"
    bt = aggregate.bootstrap_bt(model_battles(scores), rounds=rounds, seed=seed)
    board = [{"model": m, "rating": r["rating"], "low": r["lower"], "high": r["upper"], "rank": r["rank"]}
             for m, r in bt.items()]
    return sorted(board, key=lambda r: -r["rating"]), None


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def training_curves(metrics: dict[str, str]) -> tuple[bytes | None, dict[str, Any]]:
    """Score and KL over training steps from metrics.jsonl files (``objective/score``, ``objective/kl``); where
    a run logged several objectives (PPO's ``objectives``, ``objective/<name>``: dashed) or watch-only scorers
    (``monitor_scorers``, ``monitor/<name>``, e.g. the gold scorer: dotted), a third panel draws the reward and
    each of those scores against the KL (Gao et al. 2022's axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, Any] = {}
    series = {}
    for label, path in metrics.items():
        rows = [r for r in read_jsonl_tolerant(path) if "objective/score" in r or "objective/kl" in r] \
            if Path(path).exists() else []
        if rows:
            series[label] = rows
            sc = [r["objective/score"] for r in rows if isinstance(r.get("objective/score"), (int, float))]
            kl = [r["objective/kl"] for r in rows if isinstance(r.get("objective/kl"), (int, float))]
            summary[label] = {"steps": len(rows), "score_first": sc[0] if sc else None,
                              "score_last": sc[-1] if sc else None, "kl_last": kl[-1] if kl else None,
                              "kl_max": max(kl) if kl else None}
            for key in objective_keys(rows) + monitored_keys(rows):
                vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
                summary[label][f"{key}_first"], summary[label][f"{key}_last"] = vals[0], vals[-1]
        else:
            summary[label] = {"steps": 0, "note": f"no objective/score or objective/kl rows in {path}"}
    if not series:
        return None, summary
    watched = any(objective_keys(rows) + monitored_keys(rows) for rows in series.values())
    fig, axes = plt.subplots(1, 3 if watched else 2, figsize=(15 if watched else 10, 3.5))
    for label, rows in series.items():
        for ax, key in zip(axes, ("objective/score", "objective/kl")):
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=label)
    for ax, title in zip(axes, ("reward-model score (objective/score)", "KL to reference (objective/kl)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    if watched:
        ax = axes[2]
        for i, (label, rows) in enumerate(series.items()):
            color = f"C{i}"
            for key, style in [("objective/score", "-"), *((k, "--") for k in objective_keys(rows)),
                               *((k, ":") for k in monitored_keys(rows))]:
                pts = [(r["objective/kl"], r[key]) for r in rows
                       if isinstance(r.get(key), (int, float)) and isinstance(r.get("objective/kl"), (int, float))]
                if pts:
                    name = "proxy" if key == "objective/score" else key.split("/", 1)[1]
                    ax.plot(*zip(*pts), linestyle="none", marker=".", alpha=0.3, color=color)
                    ax.plot(*zip(*window_means(pts, CURVE_WINDOW)), style, marker="o", markersize=4, color=color,
                            label=f"{label} {name}")
        ax.set_title(f"score against KL ({CURVE_WINDOW}-step means; dashed: objectives, dotted: monitored)")
        ax.set_xlabel("KL to reference (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig), summary


CURVE_WINDOW = 4
"""Steps averaged into one point of the score-against-KL panel (single steps score only a few prompts)."""


def window_means(pts: list[tuple[float, float]], window: int) -> list[tuple[float, float]]:
    """Means of consecutive ``window``-point runs of (x, y) points in step order (the last run may be shorter)."""
    runs = [pts[i:i + window] for i in range(0, len(pts), window)]
    return [(sum(x for x, _ in r) / len(r), sum(y for _, y in r) / len(r)) for r in runs]


def monitored_keys(rows: list[dict]) -> list[str]:
    """The ``monitor/<name>`` scores a run logged (PPO's watch-only scorers), in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r if k.startswith("monitor/")))


def objective_keys(rows: list[dict]) -> list[str]:
    """The ``objective/<name>`` scores of each of a run's several objectives (PPO's ``objectives``), in first-seen
    order: the ``objective/`` keys other than the loop's own metrics (``rlhaif.objectives.LOGGED``)."""
    from rlhaif.objectives import LOGGED

    return list(dict.fromkeys(k for r in rows for k in r
                              if k.startswith("objective/") and k.split("/", 1)[1] not in LOGGED))


def score_distributions(per_model: dict[str, dict[str, list[float]]]) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("proxy", "gold") if any(k in s for s in per_model.values())]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for name, s in per_model.items():
            if kind in s:
                ax.hist(s[kind], bins=15, alpha=0.5, label=name)
        ax.set_title(f"{kind} score per response")
        ax.legend()
    return _png(fig)


def leaderboard_plot(board: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(board)))
    names = [r["model"] for r in board][::-1]
    r = [x["rating"] for x in board][::-1]
    lo = [x["rating"] - x["low"] for x in board][::-1]
    hi = [x["high"] - x["rating"] for x in board][::-1]
    ax.errorbar(r, range(len(names)), xerr=[lo, hi], fmt="o", capsize=4)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("Bradley-Terry rating (95 % bootstrap CI)")
    ax.grid(alpha=0.3)
    return _png(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.3f} ± {1.96 * v['se']:.3f}" if math.isfinite(v["mean"]) else "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else html.escape(str(v))


def _signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}" if math.isfinite(x) else "–"


def interval_verdict(row: dict) -> str:
    """What a paired gain's 95 % interval shows: a gain or a loss only when it is clear of 0."""
    if row["low"] > 0:
        return "a gain: the 95 % interval lies above 0"
    if row["high"] < 0:
        return "a loss: the 95 % interval lies below 0"
    return "no difference shown: the 95 % interval includes 0"


def headline_lines(paired: list[dict], results: dict[str, dict[str, Any]], anchors: Sequence[str],
                   order: list[str]) -> list[str]:
    """One sentence per (model, anchor) of ``comparisons(order, anchors)`` (the reference model, then the
    baseline), the last model of ``order`` first (the trained one in the recipes): the paired gold and proxy
    gain with its bootstrap 95 % interval, the KL to the reference, the paired change in length, the smallest
    gain the set can detect, and what the gold interval shows (a gain only when it lies above 0)."""
    from rlhaif.evaluate.metrics import comparisons

    lines = []
    for name, anchor in comparisons(order[::-1], anchors):
        rows = {r["kind"]: r for r in paired if r["model"] == name and r["against"] == anchor}
        if not rows:
            continue
        kinds = ["gold", "proxy", *[k for k in rows if k not in ("gold", "proxy", "length")]]  # + gold_scorers
        parts = [f"{_signed(rows[k]['mean'])} [{_signed(rows[k]['low'])}, {_signed(rows[k]['high'])}] {k}"
                 for k in kinds if k in rows]
        kl = results[name].get("kl", {}).get("mean")
        text = f"{name} over {anchor}: " + ", ".join(parts or ["no scorer"])
        if kl is not None and math.isfinite(kl):
            text += f", at KL {kl:.2f} nats"
        if "length" in rows:
            r = rows["length"]
            text += f"; length {_signed(r['mean'], 1)} tokens [{_signed(r['low'], 1)}, {_signed(r['high'], 1)}]"
        first = next((rows[k] for k in ("gold", "proxy") if k in rows), None)
        if first is not None:
            text += (f" (paired over {first['prompts']} prompts × {first['samples_per_prompt']} samples, 95 % "
                     f"bootstrap interval; detectable gain at 80 % power: {first['mde']:.3f} "
                     f"{'gold' if 'gold' in rows else 'proxy'})")
        if "gold" in rows:
            text += f"; by the gold scorer: {interval_verdict(rows['gold'])}"
        lines.append(text)
    return lines


AT_CHANCE = "The AI labels are not better than chance"
"""How the report says that the labeler's agreement with people is at chance (tests look for it)."""


def labeler_lines(block: dict[str, Any]) -> list[str]:
    """The AI labeler's measured agreement with people (an ai_label stage's ``labeler``, ``labeler_block``) in
    plain sentences: agreement with its interval on N pairs, first-slot share, and, when the interval's lower
    bound is not above chance, that the labels are not shown to be better than chance."""
    judge = block.get("judge") or "?"
    if not block.get("measured"):
        return [f"The AI labeler ({judge}) was not measured against people (its ai_label stage had no "
                "calibration set): nothing here shows that its labels agree with people."]
    lines = [f"AI labeler ({judge}): agrees with people on {block['agreement']:.1%} "
             f"[{block['low']:.1%}, {block['high']:.1%}] of {block['n']} human-labelled pairs"
             + (f" ({Path(block['calibration']).name})" if block.get("calibration") else "")
             + f"; it picks the response shown first in {block['first_slot_share']:.1%} of single-order answers "
             f"(50% = no position bias), both orders agree on {block['order_agreement']:.1%} of pairs."]
    if block.get("at_chance"):
        lines.append(f"{AT_CHANCE} (the agreement interval's lower bound, {block['low']:.1%}, is not above "
                     f"{block.get('chance', 0.5):.0%}): what the reward model learned from them is not shown to be "
                     "what people prefer. A larger judge, or an endpoint serving one (docs/ai-feedback.md), is the "
                     "remedy.")
    else:
        lines.append(f"The AI labels are better than chance: the agreement interval's lower bound, "
                     f"{block['low']:.1%}, is above {block.get('chance', 0.5):.0%}.")
    if block.get("calibrated"):
        t = block.get("temperature")
        lines.append("Its labels were rescaled by the temperature fitted on those pairs ("
                     + ("T = ∞: every label ½" if t is None else f"T = {t:.3g}") + ").")
    return lines


def write_report(out: Path, cfg, baseline: str, prompts: Sequence[Any], prompt_ids: Sequence[str],
                 responses: dict[str, list[str]], results: dict[str, dict[str, Any]], notes: list[str],
                 groups: Sequence[str] | None = None, extra: dict[str, Any] | None = None,
                 labeler: dict[str, Any] | None = None) -> dict:
    """Write report.json and report.html (+ plots/*.png) into ``out``; return the report dict. ``groups``:
    each sample's prompt group (the evaluation by objective splits by it); ``labeler``: the AI labeler's
    measured agreement with people (``rlhaif.evaluate.run.labeler_block``), which then leads the report."""
    from rlhaif.data.records import prompt_text

    from rlhaif.evaluate.metrics import objective_table, paired_comparisons

    per_model = {n: r.pop("_per_sample", {}) for n, r in results.items()}
    lengths = {n: r.pop("_lengths", None) for n, r in results.items()}
    reference = cfg.reference if cfg.reference in results else None  # a model of the comparison, not a path
    anchors = [a for a in (reference, baseline) if a]
    series = {n: {**s, **({"length": [float(x) for x in lengths[n]]} if lengths[n] else {})}
              for n, s in per_model.items()}
    objectives = [k for k in ("gold", *getattr(cfg, "gold_scorers", {})) if any(k in v for v in per_model.values())]
    paired = paired_comparisons(series, anchors, cfg.k,
                                kinds=("gold", "proxy", "length", *[o for o in objectives if o != "gold"]),
                                seed=cfg.seed)
    by_objective = objective_table(series, responses, groups, objectives, anchors, cfg.k, seed=cfg.seed)
    headline = headline_lines(paired, results, anchors, list(results))
    plots: dict[str, bytes] = {}
    curves, training = training_curves(cfg.training_metrics)
    if curves:
        plots["training_curves"] = curves
    dist = score_distributions(per_model)
    if dist:
        plots["score_distributions"] = dist
    # the leaderboard ranks by the gold scorer, else the first of gold_scorers, else the proxy
    kind = objectives[0] if objectives else "proxy" if cfg.proxy_scorer else None
    board, why = (leaderboard({n: s[kind] for n, s in per_model.items()}, cfg.bootstrap_rounds, cfg.seed)
                  if kind else (None, "no scorer: no leaderboard"))
    if why:
        notes.append(why)
    if board:
        plots["leaderboard"] = leaderboard_plot(board)
    for name, r in results.items():
        for k in ("proxy", "gold"):
            if k in r and name != baseline and k in results[baseline]:
                r[f"{k}_delta_vs_baseline"] = r[k]["mean"] - results[baseline][k]["mean"]
    report = {**({"labeler": {**labeler, "lines": labeler_lines(labeler)}} if labeler else {}),
              "objectives": by_objective, "headline": headline, "paired": paired, "baseline": baseline,
              "reference": cfg.reference or baseline, "leaderboard_scorer": kind, "models": results,
              "leaderboard": board, "training": training, "notes": notes, "prompts": len(set(prompt_ids)),
              "responses_per_model": len(prompts), "config": cfg.model_dump(mode="json"), **(extra or {})}
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        (out / "plots" / f"{name}.png").write_bytes(png)
    with atomic_write(out / "report.json") as f:
        json.dump(report, f, indent=2, default=str)
    with atomic_write(out / "report.html") as f:
        f.write(_html(report, plots, prompts, responses, per_model, cfg.samples_in_report, prompt_text))
    return report


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;text-align:left}th{background:#f4f4f4}.resp{white-space:pre-wrap;max-width:380px}"
        "img{max-width:100%}.note{color:#666}.warn{color:#a00}")


def _html(report, plots, prompts, responses, per_model, n_samples, prompt_text) -> str:
    e = html.escape
    models = report["models"]
    cols = [("proxy", "proxy score"), ("gold", "gold score"), ("kl", "KL to ref (nats)"),
            ("win_rate", "win rate vs baseline"), ("length", "length (tokens)"), ("distinct_1", "distinct-1"),
            ("distinct_2", "distinct-2"), ("refusal_rate", "refusal rate")]
    cols[2:2] = [(n, f"{n} score") for n in dict.fromkeys(r["objective"] for r in report.get("objectives") or [])
                 if n != "gold"]
    cols = [c for c in cols if any(c[0] in r for r in models.values())]
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>rlhaif evaluation</title>"
         f"<style>{_CSS}</style></head><body><h1>rlhaif evaluation</h1>",
         f"<p>{report['prompts']} held-out prompts, {report['responses_per_model']} responses per model; "
         f"baseline <b>{e(report['baseline'])}</b>, KL measured to <b>{e(str(report['reference']))}</b> "
         f"(nats per response). Scores: mean ± 95 % interval.</p>",
         "<p class='note'>KL: the k1 estimate, the mean over the sampled responses of Σ<sub>t</sub> "
         "log π(a<sub>t</sub>) − log π<sub>ref</sub>(a<sub>t</sub>). It is unbiased for the KL, which is never "
         "below 0, but one response's term can be; so a small KL can come out slightly negative. A value below 0 "
         "means a KL near 0, within the noise, not an error.</p>" if any(k == "kl" for k, _ in cols) else "",
         "<h2>Models</h2><table><tr><th>model</th>" + "".join(f"<th>{e(t)}</th>" for _, t in cols) + "</tr>"]
    lead = [objectives_html(report["objectives"])] if report.get("objectives") else []  # the report leads
    if report.get("paired"):  # with the gains by objective and prompt group, then the paired gains
        lead += ["<h2>Paired gains (same prompts)</h2><ul>" + "".join(f"<li><b>{e(t)}</b></li>"
                                                                    for t in report["headline"]) + "</ul>",
                "<table><tr><th>model</th><th>against</th><th>measure</th><th>mean paired difference</th>"
                "<th>95 % bootstrap interval</th><th>SE</th><th>detectable (2.8·SE)</th><th>prompts × samples</th></tr>"]
        for r in report["paired"]:
            lead.append(f"<tr><td>{e(r['model'])}</td><td>{e(r['against'])}</td><td>{e(r['kind'])}</td>"
                        f"<td>{_signed(r['mean'])}</td><td>[{_signed(r['low'])}, {_signed(r['high'])}]</td>"
                        f"<td>{r['se']:.3f}</td><td>{r['mde']:.3f}</td>"
                        f"<td>{r['prompts']} × {r['samples_per_prompt']}</td></tr>")
        lead.append("</table><p class='note'>Per prompt: the model's mean over its samples minus the other model's; "
                    "averaged over prompts; the interval resamples prompts (seeded). A gain smaller than the "
                    "detectable size may be real but this prompt set cannot show it.</p>")
    if report.get("labeler"):  # and before them all, how far the AI labels behind the reward can be trusted
        lead[:0] = [labeler_html(report["labeler"])]
    h[1:1] = lead
    for name, r in models.items():
        cells = []
        for key, _ in cols:
            v = r.get(key)
            cells.append(f"{v['win_rate']:.3f} ({v['wins']}/{v['ties']}/{v['losses']})" if key == "win_rate"
                         and isinstance(v, dict) else _fmt(v))
        h.append(f"<tr><td>{e(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    h.append("</table>")
    if report["leaderboard"]:
        h.append(f"<h2>Leaderboard (Bradley-Terry on per-prompt {e(str(report['leaderboard_scorer']))} "
                 "scores)</h2><table><tr><th>rank</th><th>model</th><th>rating</th><th>95 % CI</th></tr>")
        for r in report["leaderboard"]:
            h.append(f"<tr><td>{r.get('rank', '')}</td><td>{e(str(r['model']))}</td><td>{r['rating']:.1f}</td>"
                     f"<td>{r['low']:.1f} – {r['high']:.1f}</td></tr>")
        h.append("</table>")
    titles = {"training_curves": "Score and KL over training", "score_distributions": "Score distributions",
              "leaderboard": "Leaderboard"}
    for name, png in plots.items():
        h.append(f"<h2>{titles.get(name, name)}</h2><img alt='{e(name)}' src='data:image/png;base64,"
                 f"{base64.b64encode(png).decode()}'>")
    if report["training"]:
        h.append("<h2>Training runs</h2><pre>" + e(json.dumps(report["training"], indent=2)) + "</pre>")
    names = list(responses)
    h.append("<h2>Side-by-side samples</h2><table><tr><th>prompt</th>" +
             "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>")
    for i in range(min(n_samples, len(prompts))):
        h.append(f"<tr><td class='resp'>{e(prompt_text(prompts[i]))}</td>")
        for n in names:
            sc = " ".join(f"{k}={per_model[n][k][i]:.2f}" for k in ("proxy", "gold", "kl") if k in per_model[n])
            h.append(f"<td><div class='resp'>{e(responses[n][i])}</div><div class='note'>{e(sc)}</div></td>")
        h.append("</tr>")
    h.append("</table>")
    if report["notes"]:
        h.append("<h2>Notes</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in report["notes"]) + "</ul>")
    h.append("</body></html>")
    return "\n".join(h)


def labeler_html(block: dict[str, Any]) -> str:
    """The AI labeler's measured agreement (``labeler_lines``) as the report's first section; the at-chance
    sentence, or the sentence saying it was not measured, in bold red."""
    out = ["<h2>The AI labeler, measured against people</h2>"]
    for t in block["lines"]:
        plain = block.get("measured") and not t.startswith(AT_CHANCE)
        out.append(f"<p>{html.escape(t)}</p>" if plain else f"<p class='warn'><b>{html.escape(t)}</b></p>")
    return "".join(out)


def objectives_html(rows: list[dict]) -> str:
    """The evaluation by objective as an HTML table: one row per model × objective × prompt group."""
    e = html.escape
    h = ["<h2>Gains by objective and prompt group</h2><table><tr><th>model</th><th>against</th><th>objective</th>"
         "<th>prompt group</th><th>paired gain</th><th>95 % bootstrap interval</th><th>prompts × samples</th>"
         "<th>the interval shows</th><th>length change (tokens)</th><th>refusal rate (model / against)</th></tr>"]
    for r in rows:
        above = r["low"] > 0 or r["high"] < 0
        gain = f"<b>{_signed(r['mean'])}</b>" if above else _signed(r["mean"])
        length = _signed(r["length_gain"], 1) if "length_gain" in r else "–"
        h.append(f"<tr><td>{e(r['model'])}</td><td>{e(r['against'])}</td><td>{e(r['objective'])}</td>"
                 f"<td>{e(r['group'])}</td><td>{gain}</td><td>[{_signed(r['low'])}, {_signed(r['high'])}]</td>"
                 f"<td>{r['prompts']} × {r['samples_per_prompt']}</td><td>{e(interval_verdict(r))}</td>"
                 f"<td>{length}</td>"
                 f"<td>{r['refusal_rate']:.2f} / {r['refusal_rate_against']:.2f}</td></tr>")
    h.append("</table><p class='note'>Each gold scorer is one objective; a gain in bold has its interval "
             "clear of 0. A trade between objectives or prompt groups shows as rows of opposite sign.</p>")
    return "".join(h)


_TIMINGS_START, _TIMINGS_END = "<!-- rlhaif:run-timings -->", "<!-- /rlhaif:run-timings -->"


def _seconds(t: float | None) -> str:
    return "–" if t is None else f"{t:.1f}"


def add_run_timings(out: Path, timings: dict[str, Any]) -> None:
    """Add the recipe's per-stage wall times to report.json (``run_timings``) and report.html (a table above
    the models; replaced when the recipe runs again). Called by the recipe runner once every stage is done."""
    out = Path(out)
    report = json.loads((out / "report.json").read_text())
    report["run_timings"] = timings
    with atomic_write(out / "report.json") as f:
        json.dump(report, f, indent=2, default=str)
    page = (out / "report.html").read_text()
    if _TIMINGS_START in page:
        page = page[:page.index(_TIMINGS_START)] + page[page.index(_TIMINGS_END) + len(_TIMINGS_END):]
    rows = "".join(f"<tr><td>{html.escape(r['stage'])}</td><td>{html.escape(r['kind'])}</td>"
                   f"<td>{_seconds(r['wall_time_s'])}</td><td>{_seconds(r.get('cpu_time_s'))}</td></tr>"
                   for r in timings["stages"])
    block = (f"{_TIMINGS_START}<h2>Run time</h2><table><tr><th>stage</th><th>kind</th><th>wall time (s)</th>"
             f"<th>CPU time (s, all threads)</th></tr>{rows}<tr><th colspan='2'>all stages</th><th colspan='2'>"
             f"{timings['stages_total_s']:.1f} s ({timings['stages_total_s'] / 60:.1f} min)</th></tr></table>"
             f"<p class='note'>torch threads: {timings.get('threads')}. A skipped stage shows the wall time of the "
             f"run that made its outputs (its manifest) and no CPU time.</p>{_TIMINGS_END}")
    at = page.find("<h2>Models</h2>")
    page = page[:at] + block + page[at:] if at >= 0 else page.replace("</body>", block + "</body>")
    with atomic_write(out / "report.html") as f:
        f.write(page)
