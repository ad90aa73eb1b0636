"""Reading torch pickle files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) without running anything in them.

Every torch file the bench opens goes through :func:`load_weights_only` (``torch.load(weights_only=True)``
on the CPU). A file that carries pickled code (a global such as ``os.system`` or any class instance) or a
TorchScript archive is refused, and the message says so and points to converting the file to
``.safetensors`` with a tool the user trusts. torch's own refusal text advises loading the file again with
``weights_only=False``; that advice is never passed on.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any
from zipfile import is_zipfile

from bench.spec import quote_value

CONVERT_ADVICE = "convert it to .safetensors with a tool you trust"
_GLOBAL = re.compile(r"GLOBAL\s+([^\s]+?)(?:\s|$)", re.IGNORECASE)
_OPERAND = re.compile(r"Unsupported operand\s+(\S+)", re.IGNORECASE)
_UNSAFE_ADVICE = re.compile(r"[^.\n]*(weights_only`? set to `?False|add_safe_globals|safe_globals\()[^\n]*", re.I)


class WeightsFileError(ValueError):
    """A torch file that is refused (it carries code) or cannot be read as plain tensors.

    ``reason`` is the text after ``"{file}: "``; ``carries_code`` tells a refusal from a broken file, whose
    ``detail`` is the reader's error (``Type: first line``).
    """

    def __init__(self, path: str | Path, reason: str, carries_code: bool, detail: str = ""):
        self.path, self.reason, self.carries_code, self.detail = str(path), reason, carries_code, detail
        super().__init__(f"{path}: {reason}")


def _unreadable(path: Path, err: BaseException) -> WeightsFileError:
    detail = error_text(err)
    return WeightsFileError(path, f"not a readable torch file ({detail})", carries_code=False, detail=detail)


def refusal_reason(err: BaseException) -> str:
    """Why torch's weights-only reader refused a file, in a few words and without torch's advice.

    E.g. ``"it carries pickled code (torch.load(weights_only=True) refused the global 'posix.system'), so it
    was refused and nothing in it was run; convert it to .safetensors with a tool you trust"``.
    """
    text = str(err)
    found = _GLOBAL.search(text)
    if "TorchScript" in text:
        what = "it is a TorchScript archive: compiled code (torch.load(weights_only=True) refused it)"
    elif found:
        what = (f"it carries pickled code (torch.load(weights_only=True) refused the global "
                f"{quote_value(found.group(1).rstrip('.'), 120)})")
    elif (operand := _OPERAND.search(text)) is not None:
        code = operand.group(1) if operand.group(1).isdigit() else quote_value(operand.group(1), 20)
        what = (f"it is no plain file of tensors (torch.load(weights_only=True) refused pickle opcode {code}: "
                "pickled code or objects, or no torch file at all)")
    else:
        what = "it carries pickled code or objects other than tensors (torch.load(weights_only=True) refused it)"
    return f"{what}, so it was refused and nothing in it was run; {CONVERT_ADVICE}"


def error_text(err: BaseException, limit: int = 200) -> str:
    """``Type: first sentence`` of an exception, cut to ``limit`` characters, without advice to load unsafely."""
    text = _UNSAFE_ADVICE.sub("", str(err)).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "(no message)")
    first = first.split(". ", 1)[0]  # the reader's own sentence, not the advice that follows it
    first = "".join(c if c.isprintable() else repr(c)[1:-1] for c in first[: limit + 1])
    return f"{type(err).__name__}: {first if len(first) <= limit else first[:limit] + '…'}"


def load_weights_only(path: str | Path, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; nothing in the file is run.

    Raises :class:`WeightsFileError` for a file that carries code (``carries_code=True``) or cannot be read.
    ``mmap`` maps a zip-format file instead of reading it (for a check that throws the tensors away).
    """
    import torch  # here, so that the store can use error_text without loading torch

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript archive.*")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zipfile(path))
    except pickle.UnpicklingError as err:
        raise WeightsFileError(path, refusal_reason(err), carries_code=True) from err
    except RuntimeError as err:
        if "TorchScript" in str(err):
            raise WeightsFileError(path, refusal_reason(err), carries_code=True) from err
        raise _unreadable(path, err) from err
    except Exception as err:  # a truncated or foreign file: EOFError, KeyError, ValueError, OSError, ...
        raise _unreadable(path, err) from err
