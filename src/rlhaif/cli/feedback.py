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
        """Create the feedback store (or upgrade its schema; stored labels are kept)."""
        store = _store(db, migrate=True)
        typer.echo(f"feedback store ready at {store.url} (schema revision {store.revision()})")

    @fb.command("import")
    def import_cmd(completions: Path = typer.Argument(..., help="completions.jsonl from `rlhaif generate`."),
                   db: str = typer.Option("feedback.db", help=DB_HELP),
                   campaign: str = typer.Option("default", help="Campaign name (created if new)."),
                   kind: str = typer.Option("pairwise", help="pairwise | ranking | rating | thumbs | aspects."),
                   overlap: int = typer.Option(1, "--overlap", "-k", help="Annotators per item."),
                   guidelines: Optional[Path] = typer.Option(None, help="Guidelines (Markdown file) shown beside each task."),
                   responses_per_task: int = typer.Option(4, help="Responses per ranking task.")):
        """Import completions as annotation tasks and assign them to the annotators."""
        from rlhaif.data.io import read_records
        from rlhaif.data.records import CompletionRecord
        from rlhaif.errors import RlhaifError

        records = read_records(completions, CompletionRecord)  # a bad file stops before anything is written
        store = _store(db, migrate=True)
        text = ""
        if guidelines is not None:
            if not guidelines.exists():
                raise RlhaifError(f"{guidelines}: guidelines file not found")
            text = guidelines.read_text(encoding="utf-8")
        store.create_campaign(campaign, kind, overlap, text)
        n = store.import_completions(campaign, records, path=str(completions),
                                     responses_per_task=responses_per_task)
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

    @fb.command("add-annotator")
    def add_annotator_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP),
                          admin: bool = typer.Option(False, help="An admin sees the admin page and labels nothing.")):
        """Create an annotator and print their personal sign-in token (shown once; stored hashed)."""
        token = _store(db, migrate=True).add_annotator(name, admin=admin)
        typer.echo(token)

    @fb.command("revoke")
    def revoke_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Revoke an annotator's token and end their sessions at once (labels and tasks are kept)."""
        typer.echo(f"{name}: token revoked, {_store(db).revoke(name)} session(s) ended")

    @fb.command("rotate-token")
    def rotate_token_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Give an annotator a new token (printed once); the old one and their sessions stop working."""
        typer.echo(_store(db).rotate_token(name))

    @fb.command("remove-annotator")
    def remove_annotator_cmd(name: str = typer.Argument(...), db: str = typer.Option("feedback.db", help=DB_HELP)):
        """Remove an annotator: access revoked, unlabelled tasks given to others, labels already made kept."""
        typer.echo(f"{name}: removed, {_store(db).remove_annotator(name)} unlabelled task(s) released")

    @fb.command("serve")
    def serve_cmd(db: str = typer.Option("feedback.db", help=DB_HELP),
                  host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
                  port: int = typer.Option(8000, help="TCP port."),
                  secure_cookies: bool = typer.Option(False, help="Mark the sign-in cookie Secure (behind HTTPS).")):
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
        app = _request_log(create_app(Settings(db=db, secure_cookies=secure_cookies)))
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

    @fb.command("report")
    def report_cmd(db: str = typer.Option("feedback.db", help=DB_HELP),
                   campaign: Optional[str] = typer.Option(None, help="Only this campaign."),
                   output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the report as JSON.")):
        """Agreement, reliability and the Bradley–Terry / Elo leaderboard of models."""
        from rlhaif.feedback.human.report import build_report

        rep = build_report(_store(db), campaign)
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
