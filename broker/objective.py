"""How workers find the objective without any code travelling through the broker.

The tuner records a *reference* to the objective, never the code itself:

* ``script``: the tuning ran from a script (``python tune.py`` or ``python -m pkg.tune``).
  A worker runs that same script from its copy of the workspace, up to the tuning call
  (``hyper_tune`` / ``fmin`` with :class:`tuner.trials.DistributedTrials`), where the
  call hands over the objective and the space it was given (:func:`capture_point`
  raises :class:`Captured`). The objective's globals (data loaded at the top of the
  script) and the space, with any Python objects it holds, are exactly the tuner's.
* ``module``: the tuning did not run from a script in the workspace (an interactive
  session, a test runner); the objective must be importable by ``module`` +
  ``qualname`` and the space must travel as data (:mod:`broker.space`).

Either way the source file's SHA-256 is recorded and checked by the worker, so a
worker whose workspace differs from the tuner's refuses instead of running other code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import runpy
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker.errors import ObjectiveError

_calls = 0
_capture_target: int | None = None


class Captured(BaseException):
    """Raised at the tuning call a worker is looking for, carrying its arguments.

    A ``BaseException`` so that a user's ``except Exception`` does not swallow it.
    """

    def __init__(self, fn: Callable[..., Any], space: Any) -> None:
        super().__init__("objective captured")
        self.fn = fn
        self.space = space


def capturing() -> bool:
    """True inside a worker that is replaying the tuning script to find the objective."""
    return _capture_target is not None


def capture_point(fn: Callable[..., Any], space: Any) -> int:
    """Called at the start of every distributed tuning run. Returns the run's index in
    this process; in a replaying worker, raises :class:`Captured` at the wanted index."""
    global _calls
    index = _calls
    _calls += 1
    if _capture_target is not None and index == _capture_target:
        raise Captured(fn, space)
    return index


@contextmanager
def _capture_mode(target: int) -> Iterator[None]:
    global _calls, _capture_target
    saved = (_calls, _capture_target)
    _calls, _capture_target = 0, target
    try:
        yield
    finally:
        _calls, _capture_target = saved


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- tuner side ---------------------------------------------------------------------------


def reference(fn: Callable[..., Any], workspace: Path, call_index: int) -> dict[str, Any]:
    """A JSON reference to ``fn`` that a worker with the same workspace can resolve.

    A tuning script inside the workspace is replayed (``script``); otherwise (an
    interactive session, a test runner) ``fn`` must be importable (``module``)."""
    if not callable(fn):
        raise ObjectiveError(f"the objective must be callable, got {type(fn).__name__}")
    workspace = workspace.resolve()
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and _inside(Path(main_file).resolve(), workspace):
        return _script_reference(fn, Path(main_file).resolve(), main, workspace, call_index)
    if getattr(fn, "__module__", None) == "__main__" and main_file:
        raise ObjectiveError(
            f"the tuning script {main_file} is outside the workspace {workspace}: workers "
            "run it from their copy of the workspace (set --workspace / TUNER_WORKSPACE)")
    return _module_reference(fn, workspace)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _script_reference(fn: Callable[..., Any], script: Path, main: Any, workspace: Path,
                      call_index: int) -> dict[str, Any]:
    main_spec = getattr(main, "__spec__", None)
    return {
        "kind": "script",
        "path": script.relative_to(workspace).as_posix(),
        "module": main_spec.name if main_spec is not None else None,
        "argv": list(sys.argv[1:]),
        "call": call_index,
        "qualname": getattr(fn, "__qualname__", repr(fn)),
        "sha256": file_sha256(script),
    }


def _module_reference(fn: Callable[..., Any], workspace: Path) -> dict[str, Any]:
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        raise ObjectiveError(
            f"cannot reference objective {qualname or fn!r}: run the tuning from a script "
            "file in the workspace, or define the objective at the top level of an "
            "importable module")
    source = inspect.getsourcefile(sys.modules[module_name])
    root = None
    if source and _inside(Path(source).resolve(), workspace):
        # the sys.path entry the module was imported from, relative to the workspace
        depth = module_name.count(".") + (1 if Path(source).name == "__init__.py" else 0)
        root_path = Path(source).resolve().parents[depth]
        root = root_path.relative_to(workspace).as_posix()
    return {
        "kind": "module",
        "module": module_name,
        "qualname": qualname,
        "root": root,
        "sha256": file_sha256(Path(source)) if source else None,
    }


# -- worker side -------------------------------------------------------------------------


def load(ref: dict[str, Any], workspace: Path) -> tuple[Callable[..., Any], Any | None]:
    """The objective (and, for scripts, the space) that ``ref`` points at.

    Runs user code from ``workspace``: call only with a reference whose signature was
    verified. Returns ``(fn, space)``; ``space`` is ``None`` for module references.
    """
    if ref.get("kind") == "script":
        return _load_script(ref, workspace.resolve())
    if ref.get("kind") == "module":
        if ref.get("root") is not None:
            sys.path.insert(0, str(workspace.resolve() / ref["root"]))
        return _load_module(ref), None
    raise ObjectiveError(f"unknown objective reference kind {ref.get('kind')!r}")


def _check_hash(path: Path, expected: str | None, what: str) -> None:
    if expected is None:
        return
    if not path.is_file():
        raise ObjectiveError(f"{what} {path} does not exist in this worker's workspace")
    actual = file_sha256(path)
    if actual != expected:
        raise ObjectiveError(
            f"{what} {path} differs from the tuner's copy (sha256 {actual[:12]} here, "
            f"{expected[:12]} at the tuner): sync the workspace"
        )


def _load_script(ref: dict[str, Any], workspace: Path) -> tuple[Callable[..., Any], Any]:
    script = workspace / ref["path"]
    _check_hash(script, ref["sha256"], "tuning script")
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *ref.get("argv", [])]
    sys.path.insert(0, str(workspace if ref.get("module") else script.parent))
    try:
        with _capture_mode(int(ref.get("call", 0))):
            if ref.get("module"):
                runpy.run_module(ref["module"], run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(str(script), run_name="__main__")
    except Captured as captured:
        return captured.fn, captured.space
    except SystemExit as exc:
        raise ObjectiveError(f"{ref['path']} exited ({exc.code}) before its tuning call "
                             f"#{ref.get('call', 0)}") from None
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    raise ObjectiveError(f"running {ref['path']} never reached its tuning call "
                         f"#{ref.get('call', 0)} (hyper_tune or fmin with DistributedTrials)")


def _load_module(ref: dict[str, Any]) -> Callable[..., Any]:
    spec = importlib.util.find_spec(ref["module"])
    if spec is None or spec.origin is None:
        raise ObjectiveError(f"module {ref['module']!r} is not importable on this worker")
    _check_hash(Path(spec.origin), ref.get("sha256"), f"module {ref['module']}")
    target: Any = importlib.import_module(ref["module"])
    for part in ref["qualname"].split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ObjectiveError(f"{ref['module']}.{ref['qualname']} not found")
    return target
