"""`loraqa review export|import`: pairs out to Label Studio for a person to check, and back."""

from __future__ import annotations

from typing import Optional

import typer

from loraqa.cli.options import run

review = typer.Typer(
    help="Check question-answer pairs in Label Studio: export tasks with the answers pre-filled, "
    "import the reviewed ones as training data.",
    no_args_is_help=True,
)


@review.command("export")
def export(
    source: str = typer.Argument(
        ...,
        help="loraqa data (what `loraqa synth` writes, or any data file) or a predictions file of `loraqa predict`.",
    ),
    output: str = typer.Option(
        ...,
        "--output",
        "-o",
        help="The Label Studio tasks to write (JSON); the labelling config goes beside it as OUTPUT.label_config.xml.",
    ),
    questions: Optional[str] = typer.Option(
        None, "--questions", help="With a predictions file: the questions file it answered (for the passages)."
    ),
    least_confident: Optional[int] = typer.Option(
        None,
        "--least-confident",
        min=1,
        help="Only the N pairs the model is least sure of: the lowest round-trip F1 (synthetic data) or answer probability (predictions).",
    ),
):
    """Write Label Studio tasks: passage, question and the current answer as a prediction the
    reviewer corrects. In Label Studio: create a project, paste OUTPUT.label_config.xml under
    Settings > Labeling Interface > Code, import OUTPUT, review, then Export > JSON."""

    def action():
        from loraqa.review.jobs import export_tasks

        return export_tasks(source, output, questions, least_confident)

    report = run(action)
    skipped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(report.skipped.items()))
    typer.echo(
        f"wrote {report.tasks} tasks to {output} and the labelling config to {report.config}"
        + (f"; not exported: {skipped}" if skipped else ""),
        err=True,
    )


@review.command("import")
def import_(
    export_file: str = typer.Argument(..., help="The project's Label Studio export (Export > JSON)."),
    output: str = typer.Option(..., "--output", "-o", help="The training data to write (JSONL, loraqa's data format)."),
    keep_unreviewed: bool = typer.Option(
        False,
        "--keep-unreviewed",
        help="Keep tasks nobody annotated, with their pre-filled answer (default: drop them).",
    ),
):
    """Read reviewed pairs back: corrected answers kept with their offsets checked against the
    passage, rejected and skipped pairs dropped, rewritten questions used, 'No answer in passage'
    written as an unanswerable row. Train with `loraqa train --data OUTPUT`."""

    def action():
        from loraqa.review.jobs import import_reviews

        return import_reviews(export_file, output, keep_unreviewed)

    report = run(action)
    for line in report.bad:
        typer.echo(f"error: {line}", err=True)
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(report.dropped.items())) or "none"
    typer.echo(
        f"{report.tasks} tasks: {report.kept} kept ({report.corrected} answers corrected, {report.rewritten} "
        f"questions rewritten, {report.unanswerable} without an answer); dropped: {dropped}",
        err=True,
    )
    typer.echo(
        f"wrote {report.kept} rows to {output}" + (f"; {len(report.bad)} tasks left out" if report.bad else ""),
        err=True,
    )
    if report.bad:
        raise typer.Exit(1)
