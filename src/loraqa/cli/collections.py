"""`loraqa collection add|list|show|remove|search`: collections of documents in a store."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from loraqa.cli.options import (
    Adapters,
    AllowPickle,
    Collections,
    DocumentSets,
    EmbedderEngine,
    EmbedderOpt,
    Engine,
    FileMemory,
    FileSeconds,
    FollowLinks,
    MaxFileMb,
    Model,
    RerankCandidates,
    RerankModel,
    SearchMode,
    Store,
    Where,
    adapter_map,
    collection_map,
    document_limits,
    run,
)
from loraqa.errors import render

collection = typer.Typer(
    help="Collections of documents (PDF, DOCX, HTML, Markdown, text, JSONL, SQuAD) to ask questions of.",
    no_args_is_help=True,
)
console = Console(soft_wrap=True)


@collection.command("add")
def add(
    name: str = typer.Argument(..., help="The collection (made when its first document goes in)."),
    paths: List[str] = typer.Argument(..., help="Files, folders (read recursively) or globs ('docs/**/*.md')."),
    store: Store = None,
    passage_chars: int = typer.Option(
        1000, "--passage-chars", min=100, help="Longest passage, in characters (a new collection's setting)."
    ),
    overlap: int = typer.Option(
        200, "--overlap", min=0, help="Characters consecutive passages share (a new collection's setting)."
    ),
    max_file_mb: MaxFileMb = None,
    file_memory_mb: FileMemory = None,
    file_seconds: FileSeconds = None,
    follow_links: FollowLinks = False,
    sets: DocumentSets = [],
    embedder: Optional[str] = typer.Option(
        None,
        "--embedder",
        help="A new collection's sentence-embedding model (a sentence-transformers folder or hub name): its passages get vectors, for dense and hybrid search. A collection that has one keeps it.",
    ),
    embedder_engine: EmbedderEngine = None,
    on_ray: bool = typer.Option(
        False,
        "--ray",
        help="Read, cut and embed the files on a Ray cluster's workers (pip install 'loraqa[ray]'), each file within the same budget; written here, in the files' order. The files (and the embedder's folder) must be at the same path on every node.",
    ),
    ray_address: Optional[str] = typer.Option(
        None,
        "--ray-address",
        help="With --ray: the cluster (e.g. auto, ray://HEAD:10001); default: a local Ray instance.",
    ),
    ray_workers: int = typer.Option(
        2, "--ray-workers", min=1, help="With --ray: workers reading and embedding at once."
    ),
):
    """Add files to a collection: unchanged files are skipped, changed ones replace their passages.
    Each file is read in a separate process within a memory and time budget; a file that cannot be
    read is one line and the others go on (exit 1 when any was skipped)."""

    def action():
        from loraqa.documents.walk import find_files
        from loraqa.errors import UsageError
        from loraqa.retrieval import Settings, open_store
        from loraqa.retrieval.ingest import EmbedderChoice, add_paths

        if overlap >= passage_chars:
            raise UsageError("--overlap must be smaller than --passage-chars")
        if ray_address and not on_ray:
            raise UsageError("--ray-address is for adding on Ray: add --ray")
        ray = None
        if on_ray:
            from loraqa.optional import check
            from loraqa.retrieval.ray_reading import RayReading

            check("ray", "adding to a collection on Ray (--ray)")
            ray = RayReading(ray_address, ray_workers)
        limits = document_limits(
            sets, max_file_mb=max_file_mb, file_memory_mb=file_memory_mb, file_seconds=file_seconds
        )
        target = open_store(store)
        walk = find_files(paths, follow_links)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"adding to {name}", total=len(walk.files))
            report = add_paths(
                target,
                name,
                walk,
                Settings(passage_chars, overlap),
                limits,
                progress=lambda _: bar.advance(task),
                embedder=EmbedderChoice(embedder, embedder_engine),
                on_ray=ray,
            )
        return report

    report = run(action)
    for _, why in report.skipped:
        typer.echo(f"error: {render(why, cli=True)}", err=True)
    typer.echo(
        f"{name}: {report.added} added, {report.replaced} replaced, {report.unchanged} unchanged documents"
        f"{f' ({report.files_unchanged} files unchanged since the last add)' if report.files_unchanged else ''}; "
        f"{len(report.skipped)} files skipped; {report.passages} passages written",
        err=True,
    )
    if report.skipped:
        raise typer.Exit(1)


@collection.command("list")
def list_(store: Store = None):
    """The collections in the store, with their documents and passages."""

    def action():
        from loraqa.errors import LoraqaError
        from loraqa.retrieval import open_store

        s, rows = open_store(store), []
        for n in s.names():
            try:
                c = s.open(n)
                docs, passages = c.counts()
                info = c.embedder_info()
                rows.append(
                    (
                        n,
                        str(docs),
                        str(passages),
                        str(c.settings.passage_chars),
                        str(c.settings.overlap),
                        _embedder_shown(info),
                    )
                )
            except (LoraqaError, OSError) as exc:  # one damaged collection does not hide the others
                rows.append((n, "unreadable", "", "", str(exc)[:80], ""))
        return rows

    table = Table("collection", "documents", "passages", "passage chars", "overlap", "embedder")
    for row in run(action):
        table.add_row(*map(escape, row))
    console.print(table)


@collection.command("show")
def show(
    name: str = typer.Argument(..., help="The collection."),
    document: Optional[str] = typer.Argument(None, help="A document id: its details and passages."),
    store: Store = None,
):
    """A collection's documents, or one document's passages."""

    def action():
        from loraqa.errors import UsageError
        from loraqa.retrieval import open_store

        c = open_store(store).open(name)
        if document is None:
            return c.documents(), None
        doc = c.document(document)
        if doc is None:
            raise UsageError(f"no document '{document}' in {name} (`loraqa collection show {name}` lists them)")
        return None, (doc, c.passages(document))

    docs, shown = run(action)
    if docs is not None:
        table = Table("id", "title", "source", "passages", "characters")
        for d in docs:
            table.add_row(d.id, escape(d.title), escape(d.source), str(d.passages), str(d.characters))
        console.print(table)
        return
    doc, passages = shown
    console.print(
        f"[bold]{escape(doc.title)}[/] ({escape(doc.source)}), {len(doc.text)} characters"
        + (f", {len(doc.page_starts)} pages" if doc.page_starts else "")
        + f", {len(passages)} passages"
    )
    for p in passages:
        where = f"page {p.page}, " if p.page else ""
        head = f" [{escape(p.heading)}]" if p.heading else ""
        text = p.text if len(p.text) <= 300 else p.text[:300] + " ..."
        console.print(f"[bold]{p.index}[/] ({where}characters {p.start}-{p.end}){head}\n   {escape(text)}")


@collection.command("remove")
def remove(
    name: str = typer.Argument(..., help="The collection."),
    document: Optional[str] = typer.Option(None, "--document", help="Remove only this document (its id)."),
    store: Store = None,
):
    """Remove one document from a collection, or the whole collection."""

    def action():
        from loraqa.errors import UsageError
        from loraqa.retrieval import open_store

        s = open_store(store)
        if document is None:
            s.drop(name)
            return f"removed collection {name}"
        if not s.open(name).remove(document):
            raise UsageError(f"no document '{document}' in {name}")
        return f"removed document {document} from {name}"

    typer.echo(run(action), err=True)


@collection.command("search")
def search(
    name: str = typer.Argument(..., help="The collection."),
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(5, "-k", "--top", min=1, max=1000, help="How many passages."),
    store: Store = None,
    mode: SearchMode = None,
    embedder: EmbedderOpt = None,
    where: Where = [],
    rerank_model: RerankModel = None,
    rerank_candidates: RerankCandidates = 20,
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON lines."),
):
    """The passages that best match a query (lexical, dense or hybrid), with their document, page
    and a highlighted snippet."""

    def action():
        from loraqa.inference.library import Library
        from loraqa.retrieval.filters import Filter

        rerank = (rerank_model, rerank_candidates) if rerank_model else None
        return Library(store, embedder=embedder).search(name, query, k, mode, Filter.parse(where), rerank)

    hits = run(action)
    if as_json:
        import json

        for hit in hits:
            typer.echo(json.dumps(hit.as_dict(), ensure_ascii=False))
        return
    if not hits:
        console.print("no passage matches")
    for rank, hit in enumerate(hits, 1):
        page = f"page {hit.page}, " if hit.page else ""
        snippet = escape(hit.snippet).replace("«", "[bold yellow]").replace("»", "[/]")
        console.print(
            f"[bold]{rank}. {escape(hit.title)}[/] ({page}{escape(hit.source)}, characters "
            f"{hit.start}-{hit.end}) score {hit.score:.2f}\n   {snippet}"
        )


def ask(
    question: str = typer.Argument(..., help="The question."),
    adapter: Adapters = [],
    collection_: Collections = [],
    store: Store = None,
    use: Optional[str] = typer.Option(
        None,
        "--use",
        help="Which adapter answers: a name, 'base', or 'auto' (chosen by its training domain). Default: the first.",
    ),
    model: Model = None,
    as_json: bool = typer.Option(False, "--json", help="Print the answer with its evidence and citations as JSON."),
    mode: SearchMode = None,
    embedder: EmbedderOpt = None,
    where: Where = [],
    engine: Engine = "pytorch",
    allow_pickle: AllowPickle = False,
):
    """Ask a collection a question: the passages that match are read, the best answer is shown
    in the passage it was read from, with its document and page."""

    def action():
        from loraqa.errors import UsageError
        from loraqa.inference.library import CollectionSettings
        from loraqa.inference.predict import predict_one

        adapters = adapter_map(adapter)
        bindings = collection_map(collection_, adapters)
        if not bindings:
            raise UsageError("ask answers from a collection: give --collection NAME (or ADAPTER=NAME per adapter)")
        from loraqa.retrieval.filters import dict_pairs

        answer, answerer = predict_one(
            adapters,
            question,
            None,
            use,
            mode=mode,
            filters=dict_pairs(where),
            base_model=model,
            allow_pickle=allow_pickle,
            engine=engine,
            collections=CollectionSettings(store, bindings, embedder=embedder),
        )
        return answer, answerer

    answer, answerer = run(action)
    if as_json:
        import json

        typer.echo(json.dumps(answer.as_dict(), ensure_ascii=False))
        return
    if answer.no_answer or not answer.citations:
        console.print(
            "no answer in the collection"
            + (f" (read {answer.windows} windows)" if answer.windows else " (no passage matched)")
        )
        return
    first, others = answer.citations[0], answer.citations[1:]
    console.print(f"[bold]{escape(answer.answer)}[/]  (adapter {answer.adapter}, score {answer.score:.2f})")
    page = f"page {first['page']}, " if first["page"] else ""
    console.print(f"from [bold]{escape(first['title'])}[/] ({page}{escape(first['source'])})")
    document = answerer.library.open(first["collection"]).document(first["document"])
    if document is not None and answer.start is not None:
        text, s, e = document.text, answer.start, answer.end
        lo, hi = max(0, s - 240), min(len(text), e + 240)
        console.print(
            "   "
            + ("..." if lo else "")
            + escape(text[lo:s])
            + "[bold yellow]"
            + escape(text[s:e])
            + "[/]"
            + escape(text[e:hi])
            + ("..." if hi < len(text) else "")
        )
    if others:
        console.print(
            "also read: "
            + "; ".join(f"{escape(c['title'])}" + (f" p. {c['page']}" if c["page"] else "") for c in others)
        )


def _embedder_shown(info: dict | None) -> str:
    if info is None:
        return "-"
    parts = f"parts of up to {info['parts']} characters" if info.get("parts") else "a vector a passage"
    return f"{info['name']} ({info['dim']}, {parts})"
