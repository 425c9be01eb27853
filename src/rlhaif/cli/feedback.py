"""`rlhaif feedback init | import | gold | add-annotator | revoke | rotate-token | remove-annotator | serve | suggestions | status | export | report`.

Thin wrappers over ``rlhaif.feedback.human.store`` / ``report``; none of them imports torch. (The stage
commands of the group, ``feedback simulate`` and ``feedback ai-label``, are in rlhaif.cli.stages.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rlhaif.errors import RlhaifError

DB_HELP = "Feedback store: a SQLite file path or a postgresql:// URL."
TOKEN_FILE_HELP = "Write the token to this file, readable by you only (0600), instead of printing it."


def _select(store, campaign: str, records, rule: str, budget: int, scorer_specs: list[str], seed: int):
    """Score the pool of comparisons the campaign has not asked yet and pick ``budget`` of them by ``rule``."""
    from rlhaif.feedback import select as sel
    from rlhaif.scorers import load_scorer

    pool = sel.candidate_pairs(records, exclude=store.asked_pairs(campaign))
    scorers = {spec: load_scorer(spec) for spec in scorer_specs}
    chosen = sel.select(rule, pool, budget, scorers, seed)
    typer.echo(f"selected {len(chosen)} of {len(pool)} comparisons not yet asked ({rule}"
               + (f", scores {chosen[0].score:.4g} to {chosen[-1].score:.4g}" if chosen and chosen[0].score is not None
                  else "") + ")")
    return chosen


def _cost_line(r: dict) -> str:
    sec = "n/a" if r["median_seconds"] is None else f"{r['median_seconds']} s"
    share = "n/a" if r["usable_share"] is None else f"{r['usable_share']:.0%}"
    line = f"{r['judgments']} judgments, median {sec} each, {r['usable']} usable ({share})"
    if "cost" in r:
        per = "n/a" if r["cost_per_usable_pair"] is None else f"{r['cost_per_usable_pair']:.4g}"
        line += f", cost {r['cost']:.4g}, {per} per usable pair"
    return line


def _request_log(app):
    """The ASGI app ``app``, printing one line per HTTP request: ``GET /api/next 200 3 ms``. The query string
    is left out (it is no business of a log)."""
    import sys
    import time

    async def logged(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        t0, status = time.perf_counter(), [None]

        async def send_noting_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_noting_status)
        finally:
            ms = (time.perf_counter() - t0) * 1000
            print(f"{scope['method']} {scope['path']} {status[0] or 'no response'} {ms:.0f} ms", file=sys.stdout,
                  flush=True)

    return logged


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    fb = groups["feedback"]

    def _store(db: str, migrate: bool = False):
        from rlhaif.feedback.human.store import Store

        store = Store(db)
        store.migrate() if migrate else store.check_ready()
        return store

    @fb.command("init")
    def init_cmd(db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Create the feedback store (or upgrade its schema; stored labels are kept). An existing SQLite store
        readable by others is made owner-only (0600): it holds the labels and the tokens' hashes."""
        from rlhaif.feedback.human.db import tighten_sqlite_mode

        for changed in tighten_sqlite_mode(db):  # before SQLite opens it: new -wal and -shm files copy its mode
            typer.echo(f"made owner-only: {changed}")
        store = _store(db, migrate=True)
        typer.echo(f"feedback store ready at {store.url} (schema revision {store.revision()})")

    @fb.command("import")
    def import_cmd(completions: Path = typer.Argument(..., help="completions.jsonl from `rlhaif generate`."),
                   db: str = typer.Option("feedback.db", help=DB_HELP),
                   campaign: str = typer.Option("default", help="Campaign name (created if new)."),
                   kind: str = typer.Option("pairwise", help="pairwise | ranking | rating | thumbs | aspects."),
                   overlap: int = typer.Option(1, "--overlap", "-k", help="Annotators per item."),
                   guidelines: Optional[Path] = typer.Option(None, help="Guidelines (Markdown file) shown beside each task."),
                   responses_per_task: int = typer.Option(4, help="Responses per ranking task."),
                   select: Optional[str] = typer.Option(None, "--select", help="Buy only --budget comparisons, "
                                                        "chosen by: random | uncertainty (smallest reward margin "
                                                        "first) | disagreement (largest spread of an ensemble's "
                                                        "margins first). Pairwise campaigns; docs/feedback.md."),
                   budget: Optional[int] = typer.Option(None, help="With --select: how many comparisons to import."),
                   scorer: list[str] = typer.Option([], "--scorer", help="With --select uncertainty|disagreement: a "
                                                    "reward model (rlhaif.scorers syntax); repeat it, or give an "
                                                    "ensemble folder, for disagreement."),
                   seed: int = typer.Option(0, help="With --select: the seed of the shuffle and of tie-breaking.")):
        """Import completions as annotation tasks and assign them to the annotators; with --select and
        --budget, only the comparisons a selection rule asks first."""
        from rlhaif.data.io import read_records
        from rlhaif.data.records import CompletionRecord
        from rlhaif.errors import RlhaifError

        records = read_records(completions, CompletionRecord)  # a bad file stops before anything is written
        text = ""
        if guidelines is not None:
            if not guidelines.exists():
                raise RlhaifError(f"{guidelines}: guidelines file not found")
            text = guidelines.read_text(encoding="utf-8")
        if select is not None or budget is not None or scorer:
            from rlhaif.feedback.select import check_selection, committee

            scorer = committee(select or "random", scorer)  # disagreement: an ensemble folder is its members
            check_selection(select or "random", budget, len(scorer))
            if kind != "pairwise":
                raise RlhaifError(f"--select chooses comparisons: use it with --kind pairwise, not {kind}")
        store = _store(db, migrate=True)
        chosen = None
        if select is not None or budget is not None:  # chosen before the campaign changes: a failure leaves none
            chosen = _select(store, campaign, records, select or "random", budget, scorer, seed)
        store.create_campaign(campaign, kind, overlap, text)
        if chosen is None:
            n = store.import_completions(campaign, records, path=str(completions),
                                         responses_per_task=responses_per_task)
        else:
            n = store.import_selected(campaign, chosen, str(completions))
        typer.echo(f"campaign {campaign!r}: {n} new {kind} tasks, each for {overlap} annotator(s)")
        people = sum(not a.is_admin for a in store.annotators())
        if people < overlap:
            typer.echo(f"note: {people} annotator(s) so far; each task still short of {overlap} goes to the next "
                       "ones you add with `rlhaif feedback add-annotator`", err=True)

    @fb.command("gold")
    def gold_cmd(pairs: Path = typer.Argument(..., help="Known preferences: pairs.jsonl (prompt, chosen, rejected, p)."),
                 db: str = typer.Option("feedback.db", help=DB_HELP),
                 campaign: str = typer.Option("default", help="The pairwise campaign whose tasks they answer.")):
        """Mark pairwise tasks as gold items (known answers): each annotator's accuracy on them is reported,
        and an annotator below 60 % is flagged (left out of the export)."""
        from rlhaif.data.io import read_records
        from rlhaif.data.records import PairRecord

        records = read_records(pairs, PairRecord)
        n = _store(db).set_gold_pairs(campaign, records, path=str(pairs))
        typer.echo(f"campaign {campaign!r}: {n} gold tasks")

    def _hand_out(name: str, token: str, token_file: Optional[Path]) -> None:
        """Print the token, or write it to a file only its owner can read (and say where)."""
        if token_file is None:
            typer.echo(token)
            return
        from rlhaif.errors import RlhaifError
        from rlhaif.feedback.human.store import write_secret

        try:
            write_secret(token_file, token + "\n")
        except OSError as e:
            raise RlhaifError(f"{token_file}: cannot write {name}'s token ({e.strerror}); get a new one with "
                              f"`rlhaif feedback rotate-token {name} --token-file PATH`") from None
        typer.echo(f"{name}: token written to {token_file} (readable by you only)")

    @fb.command("add-annotator")
    def add_annotator_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP),
                          admin: bool = typer.Option(False, help="An admin sees the admin page and labels nothing."),
                          token_file: Optional[Path] = typer.Option(None, help=TOKEN_FILE_HELP)):
        """Create an annotator and hand out their personal sign-in token once (printed, or written to
        --token-file); only its hash is stored."""
        _hand_out(name, _store(db, migrate=True).add_annotator(name, admin=admin), token_file)

    @fb.command("revoke")
    def revoke_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Revoke an annotator's token and end their sessions at once (labels and tasks are kept)."""
        typer.echo(f"{name}: token revoked, {_store(db).revoke(name)} session(s) ended")

    @fb.command("rotate-token")
    def rotate_token_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP),
                         token_file: Optional[Path] = typer.Option(None, help=TOKEN_FILE_HELP)):
        """Give an annotator a new token (printed once, or written to --token-file); the old one and their
        sessions stop working."""
        _hand_out(name, _store(db).rotate_token(name), token_file)

    @fb.command("remove-annotator")
    def remove_annotator_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Remove an annotator: access revoked, unlabelled tasks given to others, labels already made kept."""
        typer.echo(f"{name}: removed, {_store(db).remove_annotator(name)} unlabelled task(s) released")

    @fb.command("serve")
    def serve_cmd(db: str = typer.Option("feedback.db", help=DB_HELP),
                  host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
                  port: int = typer.Option(8000, help="TCP port."),
                  secure_cookies: bool = typer.Option(False, help="Mark the sign-in cookie Secure (behind HTTPS)."),
                  cost_per_hour: Optional[float] = typer.Option(None, min=0, help="What an annotator's hour costs "
                                                                "(the admin page shows cost per usable pair)."),
                  cost_per_judgment: Optional[float] = typer.Option(None, min=0, help="Or what one judgment costs.")):
        """Serve the annotation app (migrates the store on startup); prints its address, then one line per
        request (method, path without the query, status, time)."""
        import socket

        import uvicorn

        from rlhaif.feedback.human.app import Settings, create_app

        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise RlhaifError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        bound = sock.getsockname()[1]  # the port the system chose for --port 0
        settings = Settings(db=db, secure_cookies=secure_cookies, cost_per_hour=cost_per_hour,
                            cost_per_judgment=cost_per_judgment)
        app = _request_log(create_app(settings))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        typer.echo(f"listening on http://{f'[{host}]' if ':' in host else host}:{bound} (store {db}; Ctrl-C stops)")
        server.run(sockets=[sock])

    @fb.command("suggestions")
    def suggestions_cmd(campaign: str = typer.Argument(..., help="The pairwise campaign."),
                        on: bool = typer.Option(..., "--on/--off", help="Show AI labels to annotators, or hide them."),
                        db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Show the AI judge's label of each pairwise task to its annotators as a suggestion (off by default:
        a suggestion anchors people, so switch it on only where speed matters more than independence)."""
        _store(db).set_ai_suggestions(campaign, on)
        typer.echo(f"campaign {campaign!r}: AI suggestions {'shown' if on else 'hidden'}")

    @fb.command("status")
    def status_cmd(db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Progress per campaign."""
        store = _store(db)
        for p in store.progress():
            typer.echo(f"{p['campaign']}: {p['kind']}, {p['tasks']} tasks, {p['done']}/{p['assignments']} assignments done")
        typer.echo(f"{len(store.annotators())} annotators, {store.count_judgments()} judgments (all versions)")

    @fb.command("export")
    def export_cmd(db: str = typer.Option("feedback.db", help=DB_HELP),
                   output: Path = typer.Option(Path("pairs.jsonl"), "--output", "-o", help="pairs.jsonl to write."),
                   campaign: Optional[str] = typer.Option(None, help="Only this campaign."),
                   keep_flagged: bool = typer.Option(False, help="Keep annotators flagged as unreliable."),
                   weight_by_reliability: bool = typer.Option(False, help="Weight pairs by annotator agreement."),
                   ties: str = typer.Option("half", help="half (p=0.5) | drop."),
                   ai: bool = typer.Option(True, "--ai/--no-ai", help="Include stored AI labels (source ai:...)."),
                   format: str = typer.Option("pairs", "--format", help="pairs | kto (unpaired rows for `dpo --loss "
                                              "kto`) | kto-trl (TRL's prompt/completion/label)."),
                   rating_threshold: int = typer.Option(6, help="kto: a rating at or above it is desirable.")):
        """Write preference pairs (p, weight, source=human:<annotator>) for `rlhaif reward train`, or with
        --format kto the unpaired verdicts (thumbs, ratings, "both bad", "F") for KTO."""
        from rlhaif.feedback.human.report import export_pairs

        if format in ("kto", "kto-trl"):
            from rlhaif.feedback.export_kto import export_kto

            res = export_kto(_store(db), output, campaign, trl=format == "kto-trl", rating_threshold=rating_threshold,
                             exclude_flagged=not keep_flagged, weight_by_reliability=weight_by_reliability)
            typer.echo(f"wrote {res['rows']} rows ({res['desirable']} desirable) to {output} from {res['judgments']} judgments")
            return
        if format != "pairs":
            raise typer.BadParameter(f"--format {format!r}: use pairs, kto or kto-trl")
        res = export_pairs(_store(db), output, campaign, exclude_flagged=not keep_flagged,
                           weight_by_reliability=weight_by_reliability, ties=ties, include_ai=ai)
        typer.echo(f"wrote {res['pairs']} pairs to {output} from {res['judgments']} judgments"
                   + (f" and {res['ai_labels']} AI labels" if res["ai_labels"] else "")
                   + (f"; excluded {', '.join(res['excluded_annotators'])}" if res["excluded_annotators"] else ""))
        if not res["pairs"] and res.get("flagged_annotator"):
            typer.echo("note: every label came from annotators flagged as unreliable ("
                       f"{', '.join(res['excluded_annotators'])}; `rlhaif feedback report` shows their agreement). "
                       "Two annotators who disagree on most items "
                       "are both flagged: export their labels anyway with --keep-flagged, or add annotators so a "
                       "majority can tell who is off.", err=True)

    @fb.command("report")
    def report_cmd(db: str = typer.Option("feedback.db", help=DB_HELP),
                   campaign: Optional[str] = typer.Option(None, help="Only this campaign."),
                   output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report as JSON."),
                   cost_per_hour: Optional[float] = typer.Option(None, min=0, help="What an annotator's hour costs: "
                                                                 "adds the cost and the cost per usable pair."),
                   cost_per_judgment: Optional[float] = typer.Option(None, min=0, help="Or what one judgment costs.")):
        """Agreement, reliability, the Bradley–Terry / Elo leaderboard of models, and what the labels cost
        (judgments, median seconds each, the share that became usable pairs, cost per usable pair)."""
        from rlhaif.errors import RlhaifError
        from rlhaif.feedback.human.report import build_report

        if cost_per_hour is not None and cost_per_judgment is not None:
            raise RlhaifError("give --cost-per-hour or --cost-per-judgment, not both")
        rep = build_report(_store(db), campaign, cost_per_hour=cost_per_hour, cost_per_judgment=cost_per_judgment)
        if output:
            output.write_text(json.dumps(rep, indent=2, default=str))
        typer.echo(f"{rep['judgments']} labels; pairwise agreement {rep['agreement']}; Krippendorff alpha {rep['alpha']}")
        for a, r in rep["reliability"].items():
            gold = f", gold accuracy {r['gold_accuracy']} on {r['gold_units']}" if r["gold_units"] else ""
            typer.echo(f"  {a}: agreement {r['agreement']} on {r['units']} units{gold}" + ("  FLAGGED" if r["flagged"] else ""))
        for m in rep["models"]:
            typer.echo(f"  #{m['rank']} {m['item']}: BT {m['rating']} [{m['lower']}, {m['upper']}], Elo {m['elo']}")
        for model, r in rep["ai_agreement"].items():
            typer.echo(f"  AI judge {model}: agrees with the human majority on {r['agree']}/{r['tasks']} tasks")
        for name, costs in rep["costs"].items():
            typer.echo(f"costs, campaign {name}:")
            for who, r in [("all", costs["all"]), *costs["annotators"].items()]:
                typer.echo(f"  {who}: {_cost_line(r)}")
