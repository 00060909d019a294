"""`loraqa collection embed` and `loraqa collection evaluate`: a collection's vectors, and how
well each search mode finds what real questions ask."""

from __future__ import annotations

from typing import List

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loraqa.cli.collections import collection, console
from loraqa.cli.options import EmbedderEngine, EmbedderOpt, Store, Where, run


@collection.command("embed")
def embed(
    name: str = typer.Argument(..., help="The collection."),
    embedder: str = typer.Option(
        ..., "--embedder", help="The sentence-embedding model (a sentence-transformers folder or hub name)."
    ),
    replace: bool = typer.Option(
        False,
        "--replace",
        help="Make every vector again with this model: for a collection embedded with another model, or before passages were embedded in parts (one vector a passage).",
    ),
    embedder_engine: EmbedderEngine = None,
    store: Store = None,
):
    """Give an existing collection's passages vectors, for dense and hybrid search: a document per
    transaction, so a stopped run keeps what it did and running it again finishes the rest."""

    def action():
        from loraqa.retrieval import open_store
        from loraqa.retrieval.embedders import load_embedder
        from loraqa.retrieval.ingest import embed_collection

        target = open_store(store).open(name)
        model = load_embedder(embedder, embedder_engine)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"embedding {name}", total=None)
            done = embed_collection(
                target, model, replace, progress=lambda n, total: bar.update(task, completed=n, total=total)
            )
        return done, model

    done, model = run(action)
    typer.echo(f"{name}: {done} documents embedded with {model.name} ({model.dim} dimensions)", err=True)


@collection.command("evaluate")
def evaluate(
    name: str = typer.Argument(..., help="The collection."),
    questions: str = typer.Option(
        ...,
        "--questions",
        help="SQuAD JSON (its contexts are documents of the collection) or JSONL rows {question, answers, document}: document by its source, file name or title.",
    ),
    mode: List[str] = typer.Option(
        [], "--mode", help="lexical, dense or hybrid (repeatable; default: every mode the collection supports)."
    ),
    per_document: bool = typer.Option(
        False, "--per-document", help="Search each question within its own document only."
    ),
    embedder: EmbedderOpt = None,
    where: Where = [],
    store: Store = None,
    as_json: bool = typer.Option(
        False, "--json", help='Print {"MODE": {"recall@1", "recall@5", "recall@20", "mrr", "questions"}}.'
    ),
):
    """Recall@1/5/20 and MRR of the collection's search on real questions, in each search mode:
    a hit is a passage of the question's document that holds its answer. No adapter needed."""

    def action():
        from loraqa.evaluation.collection_eval import evaluate_collection, read_questions
        from loraqa.inference.library import Library
        from loraqa.retrieval.filters import Filter

        library = Library(store, embedder=embedder)
        asked = read_questions(questions, library.open(name))
        with Progress(console=Console(stderr=True), transient=True) as bar:
            tasks: dict = {}

            def progress(m: str, n: int, total: int) -> None:
                if m not in tasks:
                    tasks[m] = bar.add_task(f"{m} search", total=total)
                bar.update(tasks[m], completed=n)

            return evaluate_collection(library, name, asked, mode or None, per_document, progress, Filter.parse(where))

    result = run(action)
    if as_json:
        import json

        typer.echo(json.dumps(result))
        return
    table = Table("mode", "R@1", "R@5", "R@20", "MRR", "questions")
    for m, r in result.items():
        table.add_row(
            m,
            f"{r['recall@1']:.1f}",
            f"{r['recall@5']:.1f}",
            f"{r['recall@20']:.1f}",
            f"{r['mrr']:.3f}",
            str(r["questions"]),
        )
    console.print(table)
