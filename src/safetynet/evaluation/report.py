"""Write evaluation results: a Markdown report and a ``results.json`` with provenance.

Both are written atomically. JSON keeps numbers as numbers; NaN and ±inf (e.g. a rate whose
denominator is empty) become ``null``, because JSON has no NaN and most readers reject it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import platform
import sys
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .._io import write_bytes_atomic
from ..errors import InputError

__all__ = ["to_jsonable", "config_record", "environment_info", "git_commit", "command_line", "reproduce_paragraph", "write_results_json", "read_results_json", "markdown_table",
           "image_link", "MarkdownReport"]


# --------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """Convert results to plain JSON types: numpy/torch numbers and arrays, dataclasses, paths, enums.

    Non-finite floats become ``None``; mapping keys become strings; tuples become lists.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        as_dict = getattr(obj, "as_dict", None)
        return to_jsonable(as_dict() if callable(as_dict) else dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return to_jsonable(obj.detach().cpu().numpy())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    raise InputError(f"cannot write a {type(obj).__name__} to JSON; convert it to numbers, strings, lists or dicts first")


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed: record its absence rather than fail the whole report
        return None


def config_record(cfg: Any) -> dict[str, Any]:
    """A job's config as JSON-ready values; objects passed instead of names (an ``nn.Module``, a bundle) become their repr."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        try:
            out[f.name] = to_jsonable(v)
        except InputError:
            out[f.name] = f"<{type(v).__name__} object>"
    return out


def git_commit() -> str | None:
    """The git commit of the safetynet source tree (with ``-dirty`` for uncommitted changes), or None outside git."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):  # no git binary, or a hung repository: record the absence
        return None


def command_line(argv: Sequence[str] | None = None) -> str | None:
    """The ``safetynet ...`` command that made a result, from ``argv``; None when it came from Python code."""
    import shlex

    argv = list(sys.argv if argv is None else argv)
    if not argv or Path(argv[0]).name not in ("safetynet", "cli.py"):
        return None
    return shlex.join(["safetynet", *argv[1:]])


def environment_info() -> dict[str, Any]:
    """Versions and machine facts recorded with every result, and a UTC timestamp."""
    import safetynet

    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "safetynet": safetynet.__version__,
        "torch": _version("torch"),
        "numpy": np.__version__,
        "scikit-learn": _version("scikit-learn"),
        "scipy": _version("scipy"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "argv": list(sys.argv),
        "command": command_line(),
        "git_commit": git_commit(),
    }


def write_results_json(path: str | os.PathLike[str], results: Any, config: Any = None,
                       environment: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"results", "config", "environment"}`` to ``path`` atomically; returns the path.

    ``environment`` defaults to :func:`environment_info` (versions of python, torch, numpy,
    scikit-learn, safetynet and a timestamp). Non-finite numbers are written as ``null``.
    """
    doc = {
        "results": to_jsonable(results),
        "config": to_jsonable(config),
        "environment": to_jsonable(environment if environment is not None else environment_info()),
    }
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"  # allow_nan=False: a NaN that slipped through fails here
    write_bytes_atomic(path, text.encode())
    return Path(path)


def read_results_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by :func:`write_results_json` (plain JSON; ``null`` stays ``None``)."""
    from ..errors import DataError

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"results file {path} not found; run the evaluation that writes it first") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"results file {path} is not valid JSON ({exc}); re-run the evaluation to rewrite it") from None


# --------------------------------------------------------------------------- Markdown


def _cell(value: Any, fmt: str | Callable[[Any], str] | None, float_fmt: str) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        text = "n/a"
    elif fmt is not None:
        text = fmt(value) if callable(fmt) else fmt.format(value)
    elif isinstance(value, (bool, np.bool_)):
        text = str(bool(value))
    elif isinstance(value, (float, np.floating)):
        text = float_fmt.format(float(value))
    else:
        text = str(value)
    # A pipe would end the cell early and a newline would end the row.
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   formats: Mapping[str, str | Callable[[Any], str]] | None = None,
                   float_fmt: str = "{:.3f}", headers: Mapping[str, str] | None = None,
                   align: Mapping[str, str] | None = None) -> str:
    """A GitHub-flavoured Markdown table from a list of dicts.

    ``columns`` picks and orders the keys (default: keys in first-seen order); ``formats`` maps
    a column to a format string (``"{:.1%}"``) or a callable; missing or NaN values show
    ``n/a``; ``headers`` renames columns; numbers are right-aligned unless ``align`` says
    otherwise (``"l"``, ``"r"`` or ``"c"``).
    """
    if not rows:
        raise InputError("markdown_table needs at least one row")
    if columns is None:
        cols: list[str] = []
        for r in rows:
            cols += [k for k in r if k not in cols]
    else:
        cols = list(columns)
    formats, headers, align = formats or {}, headers or {}, align or {}

    def is_num(c: str) -> bool:
        vals = [r.get(c) for r in rows if r.get(c) is not None]
        return bool(vals) and all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in vals)

    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    head = "| " + " | ".join(_cell(headers.get(c, c), None, float_fmt) for c in cols) + " |"
    rule = "| " + " | ".join(marks[align.get(c, "r" if is_num(c) else "l")] for c in cols) + " |"
    body = ["| " + " | ".join(_cell(r.get(c), formats.get(c), float_fmt) for c in cols) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def image_link(image: str | os.PathLike[str], report: str | os.PathLike[str], alt: str = "") -> str:
    """``![alt](path)`` with the image path relative to the report's folder (POSIX separators)."""
    rel = os.path.relpath(Path(image).resolve(), Path(report).resolve().parent)
    return f"![{alt}]({PurePath(rel).as_posix()})"


class MarkdownReport:
    """Build a Markdown report piece by piece and write it atomically::

        rep = MarkdownReport("runs/eval/report.md", title="Detection on CIFAR-10")
        rep.table([{"attack": "fgsm", "auc": 0.97}]).image("runs/eval/roc.png", "ROC")
        rep.write()
    """

    def __init__(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        self.path = Path(path)
        self.parts: list[str] = [f"# {title}\n"] if title else []

    def heading(self, text: str, level: int = 2) -> "MarkdownReport":
        if not 1 <= level <= 6:
            raise InputError(f"heading level must be 1..6, got {level}")
        self.parts.append(f"{'#' * level} {text}\n")
        return self

    def paragraph(self, text: str) -> "MarkdownReport":
        self.parts.append(text.rstrip() + "\n")
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], **kwargs: Any) -> "MarkdownReport":
        self.parts.append(markdown_table(rows, **kwargs))
        return self

    def image(self, image: str | os.PathLike[str], alt: str = "") -> "MarkdownReport":
        self.parts.append(image_link(image, self.path, alt) + "\n")
        return self

    def render(self) -> str:
        return "\n".join(self.parts)

    def write(self) -> Path:
        write_bytes_atomic(self.path, self.render().encode())
        return self.path


def reproduce_paragraph(environment: Mapping[str, Any]) -> str:
    """The report's "Reproduce" text: the recorded command line (never rebuilt by hand) and the commit."""
    cmd = environment.get("command")
    commit = environment.get("git_commit") or "unknown"
    if cmd:
        return f"```\n{cmd}\n```\nat commit `{commit}`, {environment.get('torch_threads')} torch thread(s). " \
               "Full configuration, versions and every number: `results.json`."
    return (f"Made from Python (`{' '.join(environment.get('argv') or [])}`) at commit `{commit}`; the configuration "
            "is in `results.json`.")
