"""Output folders of the command line: a run writes only files it owns, under an OS lock.

A folder's manifest (`arhmm-eqx-manifest.json`) lists the kind of run that owns it (`fit`,
`apply` or `demo`) and every file and folder those runs wrote. A run refuses to start when
any path it would write already exists and is not listed there for its kind, so files the
user put in the folder (or the outputs of another kind of run) are never replaced; a
`resume` of a fit, or a new `demo`, may rewrite the files listed. The checks run before
anything is written; `open` then takes an exclusive `fcntl.flock` on `.arhmm-eqx.lock`, so a
second run into the same folder at the same time refuses instead of interleaving.
"""

import json
import os
import re
from pathlib import Path

from ._files import atomic_write, temporary_name_of


MANIFEST = "arhmm-eqx-manifest.json"
LOCK = ".arhmm-eqx.lock"
_CKPT_TMP = re.compile(r"^\.ckpt_\d+\.(eqx|json)\.[A-Za-z0-9_]+\.tmp$")


class OutputFolder:
    """The output folder of one command-line run of `kind` (`fit`, `apply` or `demo`)."""

    def __init__(self, path: str | os.PathLike, kind: str):
        self.path, self.kind = Path(path), kind
        self._lock_fd = None
        self._files: set[str] = set()

    def manifest(self) -> dict | None:
        """The folder's manifest, `None` if it has none; a `ValueError` if it is not one."""
        path = self.path / MANIFEST
        if not os.path.lexists(path):
            return None
        try:
            if path.is_symlink():
                raise ValueError("a symbolic link")
            manifest = json.loads(path.read_text())
            if not (isinstance(manifest, dict) and isinstance(manifest.get("kind"), str)
                    and isinstance(manifest.get("files"), list)):
                raise ValueError("not a manifest")
        except (OSError, ValueError, UnicodeDecodeError):
            raise ValueError(f"{str(path)!r} was not written by arhmm-eqx (or is damaged); choose another --out.") \
                from None
        return manifest

    def owned(self) -> set[str]:
        """The paths (relative to the folder) that runs of this kind wrote here."""
        manifest = self.manifest()
        if manifest is None or manifest["kind"] != self.kind:
            return set()
        return {str(name) for name in manifest["files"]}

    def check(self, names) -> None:
        """Refuse if a path of `names` exists and is not owned (read-only; call before writing)."""
        if not os.path.lexists(self.path):
            return
        if not self.path.is_dir():
            raise ValueError(f"--out {str(self.path)!r} exists and is not a folder.")
        manifest, owned = self.manifest(), self.owned()
        foreign = sorted(name for name in names if os.path.lexists(self.path / name) and name not in owned)
        if foreign:
            whose = ("files of your own" if manifest is None
                     else f"files this `{self.kind}` would not own (the folder belongs to a `{manifest['kind']}`)")
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ValueError(f"{str(self.path)!r} already holds {shown}: {whose}, which this run would replace. "
                             "Nothing was written; choose another --out (a new or empty folder).")

    def open(self, names) -> None:
        """Create the folder, lock it, check `names` again under the lock, record them in the
        manifest and remove temporary files that killed writes of them left behind."""
        if self._lock_fd is None:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ValueError(f"another arhmm-eqx run is writing to {str(self.path)!r} now; wait for it to end "
                                 "or choose another --out.") from None
            except ImportError:  # no fcntl (Windows): no lock
                pass
            self._lock_fd = fd
        names = set(names)
        self.check(names)
        self._files = self.owned() | self._files | names
        atomic_write(self.path / MANIFEST, json.dumps({"kind": self.kind, "files": sorted(self._files)},
                                                      indent=1).encode())
        self._remove_temporaries(names | {MANIFEST})

    def _remove_temporaries(self, names) -> None:
        patterns = [temporary_name_of(name) for name in names]
        for entry in self.path.iterdir():
            if any(p.match(entry.name) for p in patterns) and entry.is_file() and not entry.is_symlink():
                entry.unlink()
        checkpoints = self.path / "checkpoints"
        if "checkpoints" in names and checkpoints.is_dir() and not checkpoints.is_symlink():
            for entry in checkpoints.iterdir():
                if _CKPT_TMP.match(entry.name) and entry.is_file() and not entry.is_symlink():
                    entry.unlink()

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock (the lock file stays: removing it would race)
            self._lock_fd = None


def refuse_input_among_outputs(data: str | os.PathLike, out: str | os.PathLike, names) -> None:
    """A run never writes over its own input file."""
    data = Path(data).resolve()
    for name in names:
        target = Path(out) / name
        if target.resolve() == data or (os.path.exists(target) and os.path.exists(data)
                                        and os.path.samefile(target, data)):
            raise ValueError(f"the input file {str(data)!r} is {name!r} of --out {str(out)!r}, which this run "
                             "writes; choose another --out.")
