"""Image folders (plain or in .tar.gz/.zip archives) and label tables.

An image folder is one sub-folder per class, optionally under split folders (``train``/``training``,
``val``/``valid``/``validation``, ``test``/``testing``, any case), or any folder of images with a
label table (CSV: ``file,label`` and optional ``split`` and ``group``/``patient`` columns), as a
DICOM folder is. Archives are read in memory, and an archive entry that would escape its folder
(``..`` or an absolute path) or is a link is refused before anything is used.
"""

from __future__ import annotations

import lzma
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from synthgate.data.imaging import IMAGE_SUFFIXES
from synthgate.data.sources import ARCHIVE_SUFFIXES, SPLIT_ALIASES, SPLITS, RawItem, SourceData, log
from synthgate.errors import ConfigError, DataError
from synthgate.utils import printable, sha256_file, sha256_tree


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _safe_member(name: str, archive: Path) -> tuple[str, ...]:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(
            f"{archive}: refusing archive entry '{name}': absolute path",
            hint="the archive is unsafe or malformed; re-create it with relative paths",
        )
    if ".." in p.parts:
        raise DataError(
            f"{archive}: refusing archive entry '{name}': '..' would escape the target folder",
            hint="the archive is unsafe or malformed; re-create it with relative paths",
        )
    return tuple(x for x in p.parts if x not in ("", "."))


def _read_archive(path: Path) -> tuple[dict[tuple[str, ...], bytes], set[tuple[str, ...]]]:
    files: dict[tuple[str, ...], bytes] = {}
    dirs: set[tuple[str, ...]] = set()
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    parts = _safe_member(info.filename, path)
                    if not parts:
                        continue
                    if info.is_dir():
                        dirs.add(parts)
                    elif not _is_hidden(parts) and PurePosixPath(*parts).suffix.lower() in IMAGE_SUFFIXES:
                        files[parts] = zf.read(info)
        else:
            with tarfile.open(path, "r:*") as tf:
                for m in tf:
                    parts = _safe_member(m.name, path)
                    if not parts:
                        continue
                    if m.issym() or m.islnk():
                        raise DataError(
                            f"{path}: refusing archive entry '{m.name}': links are not allowed",
                            hint="re-create the archive without symbolic or hard links",
                        )
                    if m.isdir():
                        dirs.add(parts)
                    elif m.isfile() and not _is_hidden(parts):
                        if PurePosixPath(*parts).suffix.lower() in IMAGE_SUFFIXES:
                            f = tf.extractfile(m)
                            files[parts] = f.read() if f is not None else b""
    except DataError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError,
            ValueError) as e:  # ValueError: a zip entry's name flagged UTF-8 that is not
        raise DataError(f"{path}: cannot read archive ({type(e).__name__}: {e})", hint="is the archive complete?"
                        ) from None
    except (NotImplementedError, RuntimeError) as e:  # zipfile: an unknown compression method, an encrypted member
        raise DataError(f"{path}: cannot read archive ({e})",
                        hint="re-create it without a password, compressed with deflate, bzip2 or lzma") from None
    return files, dirs


def _class_layout(
    files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], origin: Path
) -> tuple[tuple[str, ...], dict[str, list[tuple[str, ...]]]]:
    """Find the folder whose sub-folders are the classes; return its prefix and files per class.

    Descends through single wrapper folders (``MedNIST/`` in MedNIST.tar.gz) but never into a
    folder that holds images itself, so a one-class dataset keeps its class folder. Split folders
    are found by :func:`_split_layout`; here they are refused beside other folders (a class named
    like a split).
    """
    if not files:
        raise DataError(
            f"{origin}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})",
            hint="expected one sub-folder per class containing images",
        )
    prefix, children = _descend(files, dirs, origin)
    n = len(prefix)
    where = origin / "/".join(prefix) if prefix else origin
    split_like = sorted(c for c in children if c.lower() in SPLIT_ALIASES)
    if split_like:
        others = sorted(set(children) - set(split_like))
        raise DataError(
            f"{where}: folder(s) named like a split ({', '.join(split_like)}) beside class folder(s) "
            f"({', '.join(others)}): expected either split folders (train/val/test) each holding the same class "
            "folders, or class folders only",
            hint="rename a class that is called like a split, or move the classes into the split folders")
    per_class: dict[str, list[tuple[str, ...]]] = {c: [] for c in children}
    for f in files:
        per_class.setdefault(f[n], []).append(f)
    empty = sorted(c for c, fs in per_class.items() if not fs)
    if empty:
        raise DataError(
            f"{where}: class folder '{empty[0]}' contains no images"
            + (f" (also empty: {', '.join(empty[1:])})" if len(empty) > 1 else ""),
            hint="add images to it or remove the empty folder",
        )
    return prefix, {c: sorted(fs) for c, fs in sorted(per_class.items())}


def _descend(files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], origin: Path
             ) -> tuple[tuple[str, ...], set[str]]:
    """Through single wrapper folders to the first level with several folders (or one that holds
    images); refuses images lying at that level itself."""
    all_dirs = set(dirs) | {f[:i] for f in files for i in range(1, len(f))}
    prefix: tuple[str, ...] = ()
    while True:
        n = len(prefix)
        if any(len(f) == n + 1 and f[:n] == prefix for f in files):
            where = "/".join(prefix) or "the top level"
            raise DataError(
                f"{origin}: images directly in {where}; expected one sub-folder per class",
                hint="move the images into <class name>/ folders, or give a label table (data.source.labels)",
            )
        children = {d[n] for d in all_dirs if len(d) > n and d[:n] == prefix and not _is_hidden(d[n : n + 1])}
        if len(children) == 1:
            child = next(iter(children))
            if child.lower() not in SPLIT_ALIASES and not any(len(f) == n + 2 and f[n] == child for f in files):
                prefix = prefix + (child,)
                continue
        return prefix, children


def _split_layout(
    files: list[tuple[str, ...]], dirs: set[tuple[str, ...]], origin: Path
) -> tuple[dict[str, list[tuple[str, ...]]], dict[tuple[str, ...], str]] | None:
    """Split folders above class folders (``Training/<class>/*.jpg``, ``Testing/<class>/*.jpg``):
    the files per class and each file's canonical split, or ``None`` when the top level (below
    wrapper folders) holds no folder named like a split. Refuses split folders beside other
    folders, two folders for one split (``train`` and ``training``), a split folder without class
    folders, and classes that differ between splits, each naming what was found."""
    if not files:
        return None
    prefix, children = _descend(files, dirs, origin)
    split_like = {c for c in children if c.lower() in SPLIT_ALIASES}
    if not split_like:
        return None
    where = origin / "/".join(prefix) if prefix else origin
    if split_like != children:
        return None  # refused by _class_layout, which names both kinds of folder
    canon: dict[str, str] = {}
    for c in sorted(children):
        s = SPLIT_ALIASES[c.lower()]
        if s in canon:
            raise DataError(f"{where}: two folders for the {s} split: {canon[s]!r} and {c!r}",
                            hint="merge them into one")
        canon[s] = c
    if "train" not in canon:
        raise DataError(f"{where}: split folders {', '.join(sorted(children))} but none for training "
                        "(train or training)", hint="add the training split's folder")
    n = len(prefix)
    per_class: dict[str, list[tuple[str, ...]]] = {}
    split_of: dict[tuple[str, ...], str] = {}
    classes_in: dict[str, list[str]] = {}
    for s, folder in canon.items():
        sub = [f[n + 1:] for f in files if f[:n + 1] == prefix + (folder,)]
        sub_dirs = {d[n + 1:] for d in dirs if d[:n + 1] == prefix + (folder,) and len(d) > n + 1}
        if not sub:
            raise DataError(f"{where / folder}: split folder without images",
                            hint="put one folder per class inside it, or remove it")
        if any(len(f) == 1 for f in sub):
            raise DataError(f"{where / folder}: images directly in the split folder; expected one folder per class "
                            "inside it", hint=f"move them into {folder}/<class name>/")
        inner, per = _class_layout(sub, sub_dirs, where / folder)
        classes_in[folder] = sorted(per)
        for c, fs in per.items():
            for f in fs:
                full = prefix + (folder,) + f
                per_class.setdefault(c, []).append(full)
                split_of[full] = s
    first = classes_in[canon["train"]]
    differ = {k: v for k, v in classes_in.items() if v != first}
    if differ:
        listing = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(classes_in.items()))
        raise DataError(f"{where}: the split folders hold different classes ({listing})",
                        hint="every split folder needs the same class folders (a split without a class "
                             "cannot test it)")
    return {c: sorted(fs) for c, fs in sorted(per_class.items())}, split_of


def _split_value(value: str, where: str) -> str:
    s = SPLIT_ALIASES.get(value.strip().lower())
    if s is None:
        raise DataError(f"{where}: split {value!r} is not one of train, val, test "
                        f"(or {', '.join(sorted(set(SPLIT_ALIASES) - set(SPLITS)))})",
                        hint="use train, val or test in the split column, or leave the column out")
    return s


def read_label_table(labels: Path) -> tuple[Any, str | None, bool]:
    """A label table: CSV with columns ``file`` and ``label``, optional ``split`` and ``group`` (or
    ``patient``). Returns the table (strings, stripped), the group column's name and whether it has
    a split column; refuses a missing file or column, an empty label or group, an unknown split
    value and a file listed twice, each naming the row."""
    import pandas as pd

    if not labels.exists():
        raise DataError(f"{labels}: label table not found", hint="set data.source.labels to a CSV file")
    try:
        table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"{labels}: cannot read the label table as CSV ({e})") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing_cols = {"file", "label"} - set(table.columns)
    if missing_cols:
        raise DataError(
            f"{labels}: label table lacks column(s) {sorted(missing_cols)}; found {list(table.columns)}",
            hint="the table needs columns 'file' (relative to the source folder) and 'label'",
        )
    if table.empty:
        raise DataError(f"{labels}: label table has no rows")
    if {"group", "patient"} <= set(table.columns):
        raise DataError(f"{labels}: both a 'group' and a 'patient' column; give one",
                        hint="keep the column that names the patient (or volume) of each image")
    group_col = "group" if "group" in table.columns else ("patient" if "patient" in table.columns else None)
    for col in ("file", "label", "split", *([group_col] if group_col else [])):
        if col in table.columns:
            table[col] = table[col].str.strip()
    for col in ("label", *([group_col] if group_col else [])):
        empty = table.index[table[col] == ""].tolist()
        if empty:
            raise DataError(f"{labels}: row {empty[0] + 2} has an empty {col}"
                            + (f" ({len(empty)} rows in all)" if len(empty) > 1 else ""),
                            hint=f"fill in every {col}")
    dup = table["file"][table["file"].duplicated()].tolist()
    if dup:
        raise DataError(f"{labels}: file {dup[0]!r} is listed more than once"
                        + (f" ({len(dup)} repeats in all)" if len(dup) > 1 else ""),
                        hint="one row per image")
    has_split = "split" in table.columns
    if has_split:
        for i, v in enumerate(table["split"]):
            table.loc[i, "split"] = _split_value(v, f"{labels}: row {i + 2}")
    return table, group_col, has_split


def _table_items(table: Any, labels: Path, available: dict[str, tuple[str, bytes | Path]], origin: Path,
                 group_col: str | None, has_split: bool) -> list[RawItem]:
    """Items for the rows of a label table, matched by ``file`` against the source's files
    (``available``: path inside the source -> (source name, bytes or file)); refuses rows naming a
    missing file and files the table does not list, each by name."""
    missing = [f for f in table["file"] if f not in available]
    if missing:
        raise DataError(
            f"{labels}: {len(missing)} listed file(s) not found in {origin}, e.g. {', '.join(missing[:3])}",
            hint="paths in the 'file' column are relative to the source folder (or the archive's root); "
                 f"found e.g. {', '.join(sorted(available)[:3])}")
    unlisted = sorted(set(available) - set(table["file"]))
    if unlisted:
        raise DataError(
            f"{labels}: {len(unlisted)} image file(s) in {origin} are not in the label table, e.g. "
            f"{', '.join(unlisted[:3])}",
            hint="add a row for each (file,label), or remove the files from the source")
    items = []
    for row in table.itertuples(index=False):
        name, payload = available[row.file]
        data = payload.read_bytes() if isinstance(payload, Path) else payload
        items.append(RawItem(name, row.label, data, split=row.split if has_split else None,
                             group=getattr(row, group_col) if group_col else None, path=row.file))
    return items


def read_folder(path: Path, labels: Path | None = None) -> SourceData:
    """Images in one sub-folder per class (optionally under split folders), or any images with a
    label table (``labels``): a directory, or a .tar(.gz)/.tgz/.zip archive of one."""
    if path.is_dir():
        all_paths = [p for p in path.rglob("*") if not _is_hidden(p.relative_to(path).parts)]
        img_paths = [p for p in all_paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        ignored = [str(p.relative_to(path)) for p in all_paths if p.is_file() and p not in set(img_paths)]
        rel = {p.relative_to(path).parts: p for p in img_paths}
        dirs = {p.relative_to(path).parts for p in all_paths if p.is_dir()}
        inputs = [{"path": str(path), "sha256": sha256_tree(path, img_paths), "files": len(img_paths)}]
        files: dict[tuple[str, ...], Any] = rel
        name_of = {f: printable(str(p)) for f, p in rel.items()}  # for messages: text, whatever the bytes
    elif path.name.lower().endswith(ARCHIVE_SUFFIXES):
        files, dirs = _read_archive(path)
        inputs = [{"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}]
        ignored = []
        name_of = {f: printable(f"{path.name}!{'/'.join(f)}") for f in files}
    else:
        raise ConfigError(
            f"{path}: not a folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})",
            hint="point data.source.path at the folder of class sub-folders or its archive",
        )

    def payload(f: tuple[str, ...]) -> bytes:
        v = files[f]
        return v.read_bytes() if isinstance(v, Path) else v

    if labels is not None:
        if not files:
            raise DataError(f"{path}: no image files found ({', '.join(sorted(IMAGE_SUFFIXES))})")
        table, group_col, has_split = read_label_table(labels)
        split_dirs = sorted({f[0] for f in files if len(f) > 1 and f[0].strip().lower() in SPLIT_ALIASES})
        if split_dirs and not has_split:
            log.warning("%s: the label table has no 'split' column, so the split folder(s) %s are not used as the "
                        "source's split: a new split is drawn (add a split column to keep them)", path,
                        ", ".join(split_dirs))
        available = {"/".join(f): (name_of[f], files[f]) for f in files}
        items = _table_items(table, labels, available, path, group_col, has_split)
        inputs.append({"path": str(labels), "sha256": sha256_file(labels), "bytes": labels.stat().st_size})
        return SourceData("folder", items, sorted({it.label for it in items}), inputs, has_split=has_split,
                          ignored=ignored, description=str(path),
                          group_source=f"label table column {group_col!r}" if group_col else None,
                          split_source="label table column 'split'" if has_split else None)
    split = _split_layout(list(files), dirs, path)
    if split is not None:
        per_class, split_of = split
        names = _class_names(per_class, path)
        items = [RawItem(name_of[f], names[c], payload(f), split=split_of[f], path="/".join(f))
                 for c, fs in per_class.items() for f in fs]
        found = sorted({s for s in split_of.values()}, key=SPLITS.index)
        return SourceData("folder", items, list(names.values()), inputs, has_split=True, ignored=ignored,
                          description=str(path), split_source=f"split folders ({', '.join(found)})")
    prefix, per_class = _class_layout(list(files), dirs, path)
    names = _class_names(per_class, path)
    items = [RawItem(name_of[f], names[c], payload(f), path="/".join(f)) for c, fs in per_class.items() for f in fs]
    return SourceData("folder", items, list(names.values()), inputs, ignored=ignored, description=str(path))


def _class_names(per_class: dict[str, Any], origin: Path) -> dict[str, str]:
    """Each class folder's name as the class name: a name that is not UTF-8 (kept by Python as surrogate escapes,
    which no table or JSON file can store) written with ``\\xff`` escapes; refuses two folders that read alike."""
    names = {c: printable(c) for c in per_class}
    if len(set(names.values())) < len(names):
        twins = sorted(c for c in names if c != names[c])
        raise DataError(f"{origin}: class folder {twins[0]!r} is not UTF-8 text and reads like another class "
                        f"folder, {names[twins[0]]!r}", hint="rename one of the two class folders")
    return names


def listed_file(labels: Path, root: Path, name: str) -> tuple[PurePosixPath, Path]:
    """A label table row's file: its path inside ``root`` and the file; refuses a path that leaves
    ``root`` and a file that does not exist, naming the row's value."""
    rel = PurePosixPath(str(name))
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"{labels}: file '{name}' must be a path inside {root}")
    f = root / rel
    if not f.is_file():
        raise DataError(f"{labels}: listed file '{name}' not found under {root}",
                        hint="paths in the 'file' column are relative to the source folder")
    return rel, f


