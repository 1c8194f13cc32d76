"""Reading checkpoint files safely, and pretrained-weight loading for InternImage.

``read_checkpoint`` is the one function in the repository that reads a checkpoint file
(weights-only unpickling with a short allowlist, safetensors, an explicit opt-in for a
full unpickle; see the section "reading files").

Published checkpoints come in a few wrappings: classification ones as ``{'model': sd}``,
detection/segmentation ones as ``{'state_dict': sd}`` with the trunk under ``backbone.``,
DDP-saved ones with ``module.`` prefixes, and bare state_dicts. ``read_state_dict`` turns
any of them into a flat ``{name: tensor}``; ``load_pretrained`` loads one into a model,
adapting the classifier head (21841 -> 1000 class map or re-initialisation), and reports
what did not match."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

_LOGGER = logging.getLogger(__name__)

# Keys under which trainers and frameworks wrap the weights, tried in this order.
WRAPPER_KEYS = ("model", "module", "state_dict")
# Prefixes added by DDP / torch.compile wrappers; never part of the model's own names.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
HEAD_KEYS = ("head.weight", "head.bias")
NUM_CLASSES_22K = 21841
NUM_CLASSES_1K = 1000
_MAX_LISTED = 20  # keys listed per category in a report; the rest are counted


def _is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def _describe(obj: object) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:10]) + (", ..." if len(keys) > 10 else "")
        return f"a {type(obj).__name__} with {len(keys)} keys [{shown}]"
    return f"an object of type {type(obj).__module__}.{type(obj).__qualname__}"


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat state_dict inside ``obj``: unwraps ``{'model'|'module'|'state_dict': ...}``
    (possibly nested), accepts an ``nn.Module`` or a bare mapping of tensors, and strips
    ``module.`` / ``_orig_mod.`` prefixes. Raises ``ValueError`` saying what was found when
    ``obj`` holds no state_dict."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for _ in range(4):  # wrappers nest at most a few levels ({'state_dict': {'module': ...}})
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} is not a state_dict: found {_describe(obj)}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors or len(tensors) != len(obj):
        others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise ValueError(
            f"{source} is not a state_dict (expected a mapping of names to tensors, possibly wrapped "
            f"as {{'model'|'module'|'state_dict': ...}}): found {_describe(obj)}; non-tensor entries: "
            f"{others[:10]}")
    state_dict = {}
    for key, value in tensors.items():
        name = str(key)
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        state_dict[name] = value
    return state_dict


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "backbone.", *,
                 drop_others: bool = True) -> dict[str, torch.Tensor]:
    """Keys starting with ``prefix`` with it removed (dense checkpoints keep the trunk under
    ``backbone.``). Keys without the prefix are dropped (``drop_others``) or kept as they are.
    When no key has the prefix the state_dict is returned unchanged (a copy), so a plain
    classification checkpoint can initialise a dense model's backbone too."""
    if not any(k.startswith(prefix) for k in state_dict):
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
        elif not drop_others:
            out[key] = value
    return out


# ----------------------------------------------------------------------------- reading files
# The one place in the repository that reads a checkpoint file (``read_checkpoint``).
#
# A pickle can name any importable callable and have the loader call it, so a downloaded
# ``.pth`` can run code when it is unpickled. Files are therefore read with torch's
# weights-only unpickler, which builds only tensors, containers and plain values, plus the
# few extra types listed in ``_ALLOWED_GLOBALS``: exactly what our trainers, mmengine,
# DeepSpeed, accelerate and the published checkpoints store. Anything else is refused with
# ``UntrustedCheckpointError``; a full unpickle needs an explicit opt-in (``trust=True``,
# ``INTERNIMAGE_TRUST_CHECKPOINTS=1`` or a script's ``--trust-checkpoint``).

TRUST_ENV = "INTERNIMAGE_TRUST_CHECKPOINTS"
TRUST_FLAG = "--trust-checkpoint"
SAFETENSORS_SUFFIX = ".safetensors"
_MAX_ALLOW_ROUNDS = 64  # legacy (non-zip) files reveal their globals one refusal at a time


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint needs objects that a weights-only load refuses (they could run code).

    A ``RuntimeError``, deliberately not a ``pickle.UnpicklingError`` (what
    ``torch.load(weights_only=True)`` raises): code written for torch's error often catches
    that one to retry with ``weights_only=False`` or to re-word it (timm does), and this
    error must reach the user as it is. ``path`` is the file, ``types`` the refused globals
    (``module.name``) as far as they could be found."""

    def __init__(self, path: str, types: list[str], detail: str = "") -> None:
        self.path = path
        self.types = list(types)
        what = ", ".join(self.types) if self.types else (detail or "objects other than tensors")
        super().__init__(
            f"{path}: refusing to unpickle {what} (a weights-only load allows tensors, containers, "
            f"numbers, strings and the types InternImage's trainers write; these could run code). "
            f"If you trust this file, set {TRUST_ENV}=1 or pass {TRUST_FLAG} to load it in full; "
            f"prefer .safetensors files.")


class CheckpointReadError(RuntimeError):
    """A checkpoint file that cannot be read at all (truncated, not a checkpoint, ...)."""


def trust_from_environment() -> bool:
    """True when ``INTERNIMAGE_TRUST_CHECKPOINTS=1`` asks for full unpickling."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes")


def add_trust_argument(parser: Any) -> None:
    """Adds ``--trust-checkpoint`` to an argparse parser (see ``apply_trust_argument``)."""
    parser.add_argument(TRUST_FLAG, dest="trust_checkpoint", action="store_true",
                        help="load checkpoints in full (arbitrary pickled objects; this can run code "
                             f"from the file): only for files you trust. Same as {TRUST_ENV}=1")


def apply_trust_argument(trust_checkpoint: bool) -> None:
    """``--trust-checkpoint`` given: sets ``INTERNIMAGE_TRUST_CHECKPOINTS=1`` for this process
    and the processes it starts (data workers, launchers), so every reader sees it."""
    if trust_checkpoint:
        os.environ[TRUST_ENV] = "1"


def parse_args_with_trust(parser: Any, argv: Any = None) -> Any:
    """``parser.parse_args(argv)`` with ``--trust-checkpoint`` added and applied."""
    add_trust_argument(parser)
    args = parser.parse_args(argv)
    apply_trust_argument(args.trust_checkpoint)
    return args


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` during a weights-only load. mmengine's
    HistoryBuffer pickles its statistics methods as ``getattr(HistoryBuffer, 'min')`` etc.;
    rather than allowing getattr on anything a file names, only public methods of
    HistoryBuffer are handed out."""
    from mmengine.logging.history_buffer import HistoryBuffer

    method = getattr(owner, name, None) if owner is HistoryBuffer and not name.startswith("_") else None
    if not callable(method):
        raise pickle.UnpicklingError(f"weights-only load: refusing getattr({owner!r}, {name!r})")
    return method


class _CfgNodeStandIn:
    """Stands in for yacs' ``CfgNode`` during a weights-only load. A CfgNode is a dict
    subclass, and torch's weights-only unpickler fills only plain dicts; so each pickled
    CfgNode is built as a marked ``OrderedDict`` (its attributes restored on it as pickle
    would) and turned into a real CfgNode afterwards (``_rebuild_cfg_nodes``)."""

    def __new__(cls, *args: Any) -> Any:  # noqa: D102 - pickle's NEWOBJ calls cls.__new__(cls)
        node: OrderedDict = OrderedDict()
        node.__dict__[_CFG_NODE_MARK] = True
        return node


_CFG_NODE_MARK = "_internimage_cfg_node"


def _rebuild_cfg_nodes(obj: Any) -> Any:
    """``obj`` with every stand-in built by ``_CfgNodeStandIn`` replaced by a CfgNode
    (containers are updated in place; only dicts, lists and tuples are walked)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            rebuilt = _rebuild_cfg_nodes(value)
            if rebuilt is not value:
                obj[key] = rebuilt
        if type(obj) is OrderedDict and obj.__dict__.pop(_CFG_NODE_MARK, False):
            from yacs.config import CfgNode

            node = CfgNode()
            dict.update(node, obj)  # as pickle does: items, then the instance attributes
            node.__dict__.update(obj.__dict__)
            return node
        return obj
    if isinstance(obj, list):
        for index, value in enumerate(obj):
            rebuilt = _rebuild_cfg_nodes(value)
            if rebuilt is not value:
                obj[index] = rebuilt
        return obj
    if isinstance(obj, tuple):
        items = [_rebuild_cfg_nodes(value) for value in obj]
        if any(a is not b for a, b in zip(items, obj)):
            return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj


def _import(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def _numpy_core(name: str) -> Any:
    try:  # numpy >= 2 moved the pickling helpers to numpy._core
        return _import("numpy._core.multiarray", name)
    except ImportError:  # pragma: no cover - numpy 1.x
        return _import("numpy.core.multiarray", name)


# Globals a checkpoint may name, each resolved (imported) only when a file names it, so that
# reading a plain file imports nothing extra. Values are resolvers returning the object.
_ALLOWED_GLOBALS: dict[str, Callable[[], Any]] = {
    # configs pickled next to the weights by yacs-based trainers (published Swin-style ones)
    "yacs.config.CfgNode": lambda: (_CfgNodeStandIn, "yacs.config.CfgNode"),
    # argparse namespaces pickled by older trainers and converters
    "argparse.Namespace": lambda: _import("argparse", "Namespace"),
    # numpy scalars and arrays (metrics, RNG states); numpy 1.x files name numpy.core
    "numpy.ndarray": lambda: _import("numpy", "ndarray"),
    "numpy.dtype": lambda: _import("numpy", "dtype"),
    "numpy._core.multiarray._reconstruct": lambda: _numpy_core("_reconstruct"),
    "numpy._core.multiarray.scalar": lambda: _numpy_core("scalar"),
    "numpy.core.multiarray._reconstruct": lambda: _numpy_core("_reconstruct"),
    "numpy.core.multiarray.scalar": lambda: _numpy_core("scalar"),
    # mmengine's message hub (dense training state); getattr only on HistoryBuffer methods
    "mmengine.logging.history_buffer.HistoryBuffer":
        lambda: _import("mmengine.logging.history_buffer", "HistoryBuffer"),
    "builtins.getattr": lambda: _history_buffer_method,
    # DeepSpeed's ZeRO optimizer states (its own files, read back on resume): the loss scaler
    # object, the stage enum and the fragment bookkeeping dataclass, plain data all of them
    "deepspeed.runtime.fp16.loss_scaler.LossScaler":
        lambda: _import("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler":
        lambda: _import("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    "deepspeed.runtime.zero.config.ZeroStageEnum":
        lambda: _import("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    "deepspeed.utils.tensor_fragment.fragment_address":
        lambda: _import("deepspeed.utils.tensor_fragment", "fragment_address"),
}


def _resolve_allowed(name: str) -> Any | None:
    """The allowlisted object for a pickled global ``module.name`` (as a ``(obj, name)``
    pair when the object lives under another name), or None when it is not allowlisted."""
    resolver = _ALLOWED_GLOBALS.get(name)
    obj = None
    if resolver is not None:
        try:
            obj = resolver()
        except ImportError:
            return None
    elif name.startswith("numpy.dtypes."):  # numpy >= 1.25 pickles dtypes by their class
        import numpy as np

        candidate = getattr(getattr(np, "dtypes", None), name.rsplit(".", 1)[1], None)
        obj = candidate if isinstance(candidate, type) and issubclass(candidate, np.dtype) else None
    if obj is None:
        return None
    if isinstance(obj, tuple):  # already (stand-in, name)
        return obj
    if name == "numpy.dtype":  # a dtype is built as an instance of its numpy.dtypes class
        import numpy as np

        return [obj, *(cls for cls in vars(getattr(np, "dtypes", object)).values()
                       if isinstance(cls, type) and issubclass(cls, np.dtype))]
    own_name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    return obj if own_name == name else (obj, name)


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def _globals_in_pickles(path: Path, max_pickles: int = 5) -> set[str]:
    """Globals named by the pickles at the start of a non-zip file (a legacy torch.save
    file is a few pickles in a row, a plain ``pickle.dump`` one), found by disassembling
    them, not running them; stops quietly at the first thing that is not a pickle."""
    import pickletools

    found: set[str] = set()
    try:
        with open(path, "rb") as f:
            if f.read(1) != pickle.PROTO:  # torch.save writes protocol >= 2: garbage is not scanned
                return found
            f.seek(0)
            for _ in range(max_pickles):
                # STACK_GLOBAL takes module and name from the stack: follow the values pushed
                # (strings directly or through the memo) just far enough to name it.
                pushed: list[str | None] = []
                memo: dict[int, str | None] = {}
                for opcode, arg, _pos in pickletools.genops(f):
                    name = opcode.name
                    if name in ("GLOBAL", "INST"):
                        found.add(str(arg).replace(" ", "."))
                        pushed.append(None)
                    elif name == "STACK_GLOBAL":
                        if len(pushed) >= 2 and pushed[-2] and pushed[-1]:
                            found.add(f"{pushed[-2]}.{pushed[-1]}")
                        pushed.append(None)
                    elif name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = pushed[-1] if pushed else None
                    elif name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(int(arg)))
                    else:
                        pushed.append(arg if isinstance(arg, str) else None)
    except Exception:  # noqa: BLE001 - raw tensor bytes or garbage follow: nothing more to scan
        pass
    # protocol <= 2 pickles name builtins as __builtin__
    return {name.replace("__builtin__.", "builtins.", 1) for name in found if _DOTTED_NAME.fullmatch(name)}


def _globals_named_in(path: Path) -> set[str]:
    """The globals a file's pickles name that torch does not allow by default, read
    without unpickling (for a legacy file as far as a static scan finds them)."""
    if zipfile.is_zipfile(path):
        try:
            return set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # noqa: BLE001 - a damaged archive: the load itself reports it
            return set()
    from torch import _weights_only_unpickler

    default = set(_weights_only_unpickler._get_allowed_globals())
    return {name for name in _globals_in_pickles(path) if name not in default}


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+?)(?: was not an allowed global| whose module)")
_REFUSED_BUILD = re.compile(
    r"(?:Can only|Trying to call reduce|unsupported GLOBAL|Unsupported global|refusing getattr)")


def _refused_global(message: str) -> str | None:
    match = _REFUSED_GLOBAL.search(message)
    if not match:
        return None
    name = match.group(1)
    name = name if "." in name else f"builtins.{name}"  # torch drops the 'builtins.' prefix
    return name if _DOTTED_NAME.fullmatch(name) else None  # garbage bytes can look like a GLOBAL


def _class_names_in(message: str) -> list[str]:
    return re.findall(r"<(?:class|function|built-in function) '?([\w.]+)'?", message)


def _torch_load(path: Path, map_location: Any, weights_only: bool) -> Any:
    load = torch.load
    while getattr(load, "_internimage_routed", False):  # inside routed_torch_load: torch's own
        load = load.__wrapped__
    return load(path, map_location=map_location, weights_only=weights_only)


def _read_pickled(path: Path, map_location: Any) -> Any:
    """Weights-only load of ``path`` with the allowlist; ``UntrustedCheckpointError`` for
    anything beyond it, ``CheckpointReadError`` for a file that is not a checkpoint."""
    named = _globals_named_in(path)
    allowed: dict[str, Any] = {}
    if named:
        refused = []
        for name in sorted(named):
            obj = _resolve_allowed(name)
            if obj is None:
                refused.append(name)
            else:
                allowed[name] = obj
        if refused:  # refused before a single object is built
            raise UntrustedCheckpointError(str(path), refused)
    for _ in range(_MAX_ALLOW_ROUNDS):
        try:
            safe = [g for entry in allowed.values() for g in (entry if isinstance(entry, list) else [entry])]
            with torch.serialization.safe_globals(safe):
                loaded = _torch_load(path, map_location, True)
            return _rebuild_cfg_nodes(loaded) if "yacs.config.CfgNode" in allowed else loaded
        except pickle.UnpicklingError as error:
            message = str(error)
            detail = message.split("WeightsUnpickler error:", 1)[-1]
            name = _refused_global(message)
            # A legacy file names its globals one refusal at a time, and objects built by an
            # allowed callable (numpy's dtype(...) gives a Float64DType) are checked only
            # when built: allow an allowlisted type and read again.
            names = [name] if name is not None else _class_names_in(detail)
            if len(names) == 1 and names[0] not in allowed:
                obj = _resolve_allowed(names[0])
                if obj is not None:
                    allowed[names[0]] = obj
                    continue
            if names or _REFUSED_BUILD.search(message):
                # a type that is allowed yet refused (getattr beyond HistoryBuffer's methods,
                # a dict subclass): torch's own words say more than its name
                refused = [n for n in names if n not in allowed]
                raise UntrustedCheckpointError(str(path), refused, _one_line(detail, 200)) from None
            raise CheckpointReadError(f"{path} is not a readable PyTorch checkpoint "
                                      f"({_one_line(message.split('WeightsUnpickler error:', 1)[-1])})"
                                      ) from None
        except (UntrustedCheckpointError, CheckpointReadError):
            raise
        except Exception as error:  # truncated/garbage files raise EOFError, RuntimeError, ...
            raise CheckpointReadError(f"{path} is not a readable PyTorch checkpoint "
                                      f"({type(error).__name__}: {_one_line(error)})") from None
    raise UntrustedCheckpointError(str(path), sorted(allowed), "too many pickled types")


def _is_safetensors(path: Path) -> bool:
    if path.suffix == SAFETENSORS_SUFFIX:
        return True
    # safetensors files start with an 8-byte header length and a JSON header
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and not zipfile.is_zipfile(path)


def _read_safetensors(path: Path, map_location: Any) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    device = map_location if isinstance(map_location, (str, int)) else (
        str(map_location) if isinstance(map_location, torch.device) else "cpu")
    try:
        return load_file(str(path), device=device)
    except Exception as error:  # SafetensorError, OSError: header or data damaged
        raise CheckpointReadError(f"{path} is not a readable safetensors file "
                                  f"({type(error).__name__}: {_one_line(error)})") from None


def _download(url: str) -> Path:
    """The torch.hub cache copy of ``url`` (downloaded once, like load_state_dict_from_url)."""
    from urllib.parse import urlparse

    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    cached = folder / os.path.basename(urlparse(url).path)
    if not cached.is_file():
        try:
            torch.hub.download_url_to_file(url, str(cached), progress=False)
        except Exception as error:
            raise CheckpointReadError(f"could not download a checkpoint from {url} "
                                      f"({type(error).__name__}: {_one_line(error)})") from error
    return cached


def read_checkpoint(path: str | os.PathLike, *, trust: bool | None = None,
                    map_location: Any = "cpu") -> Any:
    """Reads a checkpoint file (or URL, downloaded to the torch.hub cache first) safely.

    ``.safetensors`` files (or files with a safetensors header) come back as a dict of
    tensors. Other files are read by ``torch.load(weights_only=True)`` with the allowlist of
    types our trainers and the published checkpoints hold (yacs ``CfgNode``,
    ``argparse.Namespace``, numpy arrays/scalars/dtypes, mmengine ``HistoryBuffer``); a file
    needing anything else raises ``UntrustedCheckpointError`` naming the file, the types and
    the opt-in. ``trust=True`` (``None``: ``INTERNIMAGE_TRUST_CHECKPOINTS=1``) does a full
    unpickle instead — only for files you trust. A missing path or a directory raises
    ``FileNotFoundError``, a file that is no checkpoint ``CheckpointReadError``, each a
    single line naming the file."""
    source = os.fspath(path)
    file = _download(source) if _is_url(source) else Path(source).expanduser()
    if not file.is_file():
        what = "is a directory, not a file" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint file {str(file)!r} {what}")
    if _is_safetensors(file):
        return _read_safetensors(file, map_location)
    if trust if trust is not None else trust_from_environment():
        try:
            return _torch_load(file, map_location, False)
        except Exception as error:
            raise CheckpointReadError(f"{file} is not a readable PyTorch checkpoint "
                                      f"({type(error).__name__}: {_one_line(error)})") from None
    return _read_pickled(file, map_location)


@contextlib.contextmanager
def routed_torch_load() -> Iterator[None]:
    """Within the block, ``torch.load`` of a file path goes through ``read_checkpoint``
    (and a file object through a weights-only load with the same allowlist), whatever
    ``weights_only`` the caller asks for. For library code that reads our checkpoints with
    a full unpickle: DeepSpeed's checkpoint engine and ``zero_to_fp32`` pass
    ``weights_only=False``, accelerate's ``load_state`` does for registered objects."""
    original = torch.load
    if getattr(original, "_internimage_routed", False):  # already routed (nested use)
        yield
        return

    @functools.wraps(original)
    def load(f: Any, map_location: Any = None, pickle_module: Any = None, **kwargs: Any) -> Any:
        if pickle_module is None and isinstance(f, (str, os.PathLike)):
            return read_checkpoint(f, map_location=map_location)
        kwargs["weights_only"] = not trust_from_environment()
        names = {"numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct",
                 "numpy._core.multiarray.scalar", "argparse.Namespace"}
        allowed = [_resolve_allowed(name) for name in sorted(names)]
        safe = [g for entry in allowed if entry is not None
                for g in (entry if isinstance(entry, list) else [entry])]
        with torch.serialization.safe_globals(safe):
            return original(f, map_location=map_location, **kwargs)

    load._internimage_routed = True
    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def read_state_dict(path_or_url: str | os.PathLike, *, trust: bool | None = None
                    ) -> dict[str, torch.Tensor]:
    """The flat state_dict of a checkpoint file or URL (``read_checkpoint`` then
    ``unwrap_state_dict``)."""
    source = os.fspath(path_or_url)
    return unwrap_state_dict(read_checkpoint(source, trust=trust), source)


def read_class_map(path: str | os.PathLike, num_rows: int = NUM_CLASSES_22K) -> torch.Tensor:
    """The 22K->1K index map: line k holds the 22K head row of 1K class k."""
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    try:
        index = torch.tensor([int(line) for line in lines], dtype=torch.long)
    except ValueError as error:
        raise ValueError(f"{path}: every line must be one integer class index ({error})") from None
    if len(index) != NUM_CLASSES_1K:
        raise ValueError(f"{path}: expected {NUM_CLASSES_1K} lines, found {len(index)}")
    if index.min() < 0 or index.max() >= num_rows:
        raise ValueError(f"{path}: indices must lie in [0, {num_rows}), found "
                         f"[{int(index.min())}, {int(index.max())}]")
    return index


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return f"{title}: none"
    shown = "\n".join(f"    {item}" for item in items[:_MAX_LISTED])
    more = f"\n    ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"{title} ({len(items)}):\n{shown}{more}"


_DCN_OFFSET_MASK = re.compile(r"(?:^|\.)dcn\.(offset|mask)\.(?:weight|bias)$")


def drop_dcn_centre(state_dict: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """For a model built with ``remove_center`` and weights trained without it: each
    ``dcn.offset`` / ``dcn.mask`` weight and bias loses the rows of the kernel's centre point
    (offset rows are laid out (group, point, xy), mask rows (group, point); for 3x3 the centre
    is point 4 of 9), so the remaining points keep their meaning. Tensors whose shapes already
    match, or do not differ by exactly one point per group, are left alone. Returns the new
    state_dict and the names that were sliced."""
    out, sliced = dict(state_dict), []
    for key, value in state_dict.items():
        match = _DCN_OFFSET_MASK.search(key)
        if match is None or key not in model_state:
            continue
        target = model_state[key].shape
        if value.shape == target or value.ndim != len(target) or value.shape[1:] != target[1:]:
            continue
        per_point = 2 if match.group(1) == "offset" else 1
        rows, kept = value.shape[0], target[0]
        removed = rows - kept  # one point per group
        if removed <= 0 or removed % per_point or rows % removed:
            continue
        groups = removed // per_point
        points = rows // removed
        if points % 2 == 0:  # only odd kernels have a centre point
            continue
        shaped = value.reshape(groups, points, per_point, *value.shape[1:])
        keep = [p for p in range(points) if p != points // 2]
        out[key] = shaped[:, keep].reshape(kept, *value.shape[1:]).clone()
        sliced.append(key)
    return out, sliced


@dataclass
class LoadReport:
    """What ``load_pretrained`` did; ``str(report)`` is the readable summary."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # (key, checkpoint shape, model shape) of tensors left out because the shapes differ
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    head: str = "loaded"  # loaded | mapped 21841->1000 | reinitialised | dropped | missing | absent
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every model tensor came from the checkpoint and nothing was left over
        (an intentional head re-initialisation or mapping excepted)."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source}; head: {self.head}"]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(_listing("missing keys (in the model, not in the checkpoint)", self.missing))
        lines.append(_listing("unexpected keys (in the checkpoint, not in the model)", self.unexpected))
        lines.append(_listing("shape mismatches (checkpoint vs model)",
                              [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]))
        return "\n".join(lines)


def reset_head(head: nn.Module | None) -> None:
    """Fresh classifier weights, as at construction: trunc-normal(std .02) weight, zero bias."""
    if isinstance(head, nn.Linear):
        trunc_normal_(head.weight, std=0.02)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def load_pretrained(model: nn.Module, checkpoint: str | os.PathLike | Mapping, *, strict: bool = True,
                    map22kto1k_path: str | os.PathLike | None = None, reinit_head: bool = False,
                    logger: logging.Logger | None = None) -> LoadReport:
    """Loads published (or our own) weights into an InternImage.

    ``checkpoint`` is a path, URL or an already-loaded (possibly wrapped) state_dict. A
    ``backbone.`` trunk (dense checkpoints) is unwrapped when the model has no such keys.
    Classifier head (``head.weight``/``head.bias``): loaded when the shapes match and
    ``reinit_head`` is False; a 21841-row head goes into a 1000-class model through the
    22K->1K map (line k = 22K row of 1K class k): ``map22kto1k_path``, by default the
    published table shipped in ``classification/data/map22kto1k.txt``; otherwise it is
    re-initialised with a warning; a model without a head (num_classes=0) drops it.
    A model built with ``remove_center`` takes the ``dcn.offset``/``dcn.mask`` tensors of a
    checkpoint trained without it minus the centre point's rows (``drop_dcn_centre``).
    With ``strict`` any other missing, unexpected or shape-mismatched tensor raises a
    ``RuntimeError`` holding the report.
    """
    log = logger or _LOGGER
    if isinstance(checkpoint, Mapping):
        source = "the given state_dict"
        state_dict = unwrap_state_dict(checkpoint, source)
    else:
        source = os.fspath(checkpoint)
        state_dict = read_state_dict(source)
    report = LoadReport(source=source)
    model_state = model.state_dict()

    if not any(k.startswith("backbone.") for k in model_state) and any(
            k.startswith("backbone.") for k in state_dict):
        state_dict = strip_prefix(state_dict, "backbone.")
        report.notes.append("took the 'backbone.' entries of a detection/segmentation checkpoint")

    # ---- classifier head
    ckpt_head = {k: state_dict.pop(k) for k in HEAD_KEYS if k in state_dict}
    model_head = {k: model_state[k] for k in HEAD_KEYS if k in model_state}
    head_module = getattr(model, "head", None)
    new_head: dict[str, torch.Tensor] = {}
    if not model_head:
        report.head = "dropped" if ckpt_head else "absent"
        if ckpt_head:
            report.notes.append("the model has no classifier (num_classes=0): checkpoint head ignored")
    elif not ckpt_head:
        report.head = "missing"
        report.missing += list(model_head)
    elif reinit_head:
        report.head = "reinitialised"
        reset_head(head_module)
        report.notes.append("head re-initialised as requested (reinit_head=True)")
    elif all(k in ckpt_head and ckpt_head[k].shape == v.shape for k, v in model_head.items()):
        new_head = ckpt_head
    else:
        rows, classes = ckpt_head["head.weight"].shape[0], model_head["head.weight"].shape[0]
        if rows == NUM_CLASSES_22K and classes == NUM_CLASSES_1K:
            from classification.data.imagenet22k import MAP22KTO1K_FILE  # the shipped table

            map_path = map22kto1k_path or MAP22KTO1K_FILE
            index = read_class_map(map_path, rows)
            new_head = {k: v[index] for k, v in ckpt_head.items()}
            report.head = f"mapped {rows}->{classes}"
            report.notes.append(f"head rows selected with {os.fspath(map_path)}")
        else:
            reset_head(head_module)
            report.head = "reinitialised"
            why = f"checkpoint head has {rows} classes, the model {classes}"
            warnings.warn(f"re-initialising the classifier head: {why}", stacklevel=2)
            log.warning("re-initialising the classifier head: %s", why)
            report.notes.append(f"head re-initialised: {why}")
    state_dict.update(new_head)

    # ---- REMOVE_CENTER model, checkpoint with centre points
    state_dict, sliced = drop_dcn_centre(state_dict, model_state)
    if sliced:
        report.notes.append(f"dropped the centre point of {len(sliced)} dcn.offset/dcn.mask tensors "
                            "(the model has remove_center)")

    # ---- everything else: same names, same shapes
    to_load = {}
    for key, value in state_dict.items():
        if key in model_state and model_state[key].shape != value.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(model_state[key].shape)))
        else:
            to_load[key] = value
    result = model.load_state_dict(to_load, strict=False)
    skipped = {k for k, _, _ in report.mismatched}
    head_done = set(model_head) if report.head == "reinitialised" else set()
    report.missing = sorted(set(report.missing) | {k for k in result.missing_keys
                                                   if k not in skipped and k not in head_done})
    report.unexpected = sorted(result.unexpected_keys)
    unexpected = set(report.unexpected)
    report.loaded = [k for k in to_load if k not in unexpected]

    if strict and not report.ok:
        raise RuntimeError(f"checkpoint does not match the model (strict=True):\n{report}")
    (log.info if report.ok else log.warning)("pretrained weights:\n%s", report)
    return report


__all__ = ["TRUST_ENV", "TRUST_FLAG", "CheckpointReadError", "LoadReport", "UntrustedCheckpointError",
           "add_trust_argument", "apply_trust_argument", "drop_dcn_centre", "load_pretrained",
           "parse_args_with_trust", "read_checkpoint", "read_class_map", "read_state_dict", "reset_head",
           "routed_torch_load", "strip_prefix", "trust_from_environment", "unwrap_state_dict"]
