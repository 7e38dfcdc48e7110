"""tqdm progress bars, or a silent stand-in where tqdm is not installed (the GPU host has none)."""

from __future__ import annotations

from typing import Any


class _Silent:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(total: int | None, desc: str, enabled: bool = True, unit: str = "it") -> Any:
    """A tqdm bar (context manager with ``update``/``set_postfix``/``write``), silent when disabled."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False)
    return _Silent()
