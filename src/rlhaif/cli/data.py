"""`rlhaif data convert`: preference files between rlhaif pairs, TRL and hh-rlhf."""

from __future__ import annotations

import typer


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @groups["data"].command("convert")
    def convert_cmd(
        src: str = typer.Argument(..., help="Input file (.jsonl or .jsonl.gz)."),
        dst: str = typer.Argument(..., help="Output file (.jsonl or .jsonl.gz; written atomically)."),
        from_format: str = typer.Option("auto", "--from", help="auto | pairs | trl | hh"),
        to_format: str = typer.Option("pairs", "--to", help="pairs | trl | trl-conversational | hh"),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Drop malformed hh-rlhf records."),
    ):
        """Convert preference pairs: rlhaif pairs.jsonl <-> TRL prompt/chosen/rejected <-> hh-rlhf transcripts."""
        from rlhaif.data.formats import convert_pairs

        counts = convert_pairs(src, dst, from_format, to_format, skip_invalid)
        typer.echo(f"wrote {counts['written']} pairs to {dst} ({counts['read']} read, {counts['skipped']} skipped)")
