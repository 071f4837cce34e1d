"""What every dataset builder shares: data location, preparing, loading, reports.

Prepared data lives under a *data directory* chosen, in order, by an explicit
argument (``--data-dir``), ``$MEMGPT_DATA_DIR``, ``$TFDS_DATA_DIR``, or tfds'
default ``~/tensorflow_datasets``. Nothing here hard-codes where raw sources are:
each builder takes its source from its caller (flag, config or env var).

Builders record what they skipped or repaired (empty texts, invalid UTF-8, ...)
in ``info.metadata["report"]``, which tfds saves next to the data; preparing
prints it with the example count of every split, so nothing is lost silently.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import tensorflow_datasets as tfds

DATA_DIR_ENV = "MEMGPT_DATA_DIR"
FILE_FORMAT = "array_record"


class DataError(ValueError):
    """A data source is missing or malformed; the message says where and how to fix it."""


class DamagedDataError(DataError):
    """A prepared dataset whose files cannot be read back (truncated or changed on disk)."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str:
    """Directory holding prepared datasets (see module docstring for the order)."""
    for path in (data_dir, os.environ.get(DATA_DIR_ENV), os.environ.get("TFDS_DATA_DIR")):
        if path:
            path = os.fspath(path)
            return path if "://" in path else os.path.abspath(os.path.expanduser(path))  # gs://... as given
    return os.path.expanduser("~/tensorflow_datasets")


class ReportingBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """GeneratorBasedBuilder writing ``array_record`` and keeping a skip report."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # What a dataset knows about itself, declared on its builder: the `memgpt-jax data prepare`
    # arguments that (re)build it (``{config}``: its config name; see ``data.catalog``), and
    # the names of its labels (index = id), stored in the prepared data's metadata.
    PREPARE: str = ""
    LABEL_NAMES: tuple[str, ...] = ()
    PIPELINE: str = ""  # the ``data.dataset`` whose pipeline reads this dataset

    def __init__(self, *, data_dir: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(data_dir=resolve_data_dir(data_dir), **kwargs)
        self.report: dict[str, Any] = {}

    def _count(self, split: str, what: str, n: int = 1) -> None:
        """Count a skipped or repaired record of ``split`` for the report."""
        per_split = self.report.setdefault(what, {})
        per_split[split] = per_split.get(split, 0) + n

    def _metadata(self) -> tfds.core.MetadataDict:
        """Stored with the prepared data: the label names, when the builder declares them."""
        meta = tfds.core.MetadataDict()
        if self.LABEL_NAMES:
            meta["label_names"] = list(self.LABEL_NAMES)
        return meta

    def settings(self) -> dict[str, Any]:
        """Inputs that shape the data but not the config name (checked on reuse)."""
        return {}

    # tfds announces "Downloading and preparing dataset Unknown size ..." and "downloaded":
    # nothing is downloaded here; ``prepare`` says what is prepared, from where, and the counts.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass


def config_arg(builder_cls: type, config: tfds.core.BuilderConfig) -> str | tfds.core.BuilderConfig:
    """The preset's name if ``config`` is one of ``builder_cls``'s presets, else ``config``."""
    preset = builder_cls.builder_configs.get(config.name)
    if preset is not None and preset != config:
        raise ValueError(f"{config.name!r} is a preset name of {builder_cls.__name__} "
                         f"with other settings; choose another name")
    return config.name if preset is not None else config


def prepare(builder: ReportingBuilder, *, echo: Callable[[str], None] = print) -> dict[str, int]:
    """Generate ``builder``'s dataset (a no-op if already prepared) and print counts.

    Returns the number of examples per split. Never downloads prepared data from
    GCS; raw sources are the builder's business.
    """
    wanted = builder.settings()
    if builder.is_prepared():
        stored = (builder.info.metadata or {}).get("settings", {})
        if stored != wanted:
            raise DataError(
                f"{builder.name}/{builder.builder_config.name} in {builder.data_dir} was prepared "
                f"with {stored}, not {wanted}; choose another name or delete that directory"
            )
    else:
        builder.info.metadata["settings"] = wanted
        source = ", ".join(f"{k}={v}" for k, v in wanted.items()) or "generated"
        echo(f"preparing {builder.name}/{builder.builder_config.name} ({source}) in {builder.data_dir} ...")
    tfds.display_progress_bar(False)  # its per-split bars and shuffling lines, for a few seconds' work
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    except AssertionError as err:  # tfds refuses to write a split with no examples
        if "No examples were yielded" not in str(err):
            raise
        raise DataError(
            f"{builder.name}/{builder.builder_config.name}: {err}; every example of that split "
            "was skipped or the source has none (see the report above for what was skipped)"
        ) from err
    finally:
        tfds.display_progress_bar(True)
    counts = {name: int(s.num_examples) for name, s in sorted(builder.info.splits.items())}
    report = dict(builder.info.metadata.get("report", {})) if builder.info.metadata else {}
    echo(f"{builder.name}/{builder.builder_config.name} at {builder.data_dir}")
    for name, n in counts.items():
        echo(f"  {name:<14} {n:>9,} examples")
    for line in format_report(report):
        echo("  " + line)
    return counts


def format_report(report: Mapping[str, Any]) -> list[str]:
    """Human lines for a builder report: ``{what: n}``, ``{what: {split: n}}`` or text."""
    lines = []
    for what, value in sorted(report.items()):
        if isinstance(value, Mapping) and not value:
            lines.append(f"{what}: 0")
        elif isinstance(value, Mapping):
            detail = ", ".join(
                f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in sorted(value.items())
            )
            if value and all(isinstance(v, int) for v in value.values()):
                lines.append(f"{what}: {sum(value.values()):,} ({detail})")
            else:
                lines.append(f"{what}: {detail}")
        elif isinstance(value, int):
            lines.append(f"{what}: {value:,}")
        else:
            lines.append(f"{what}: {value}")
    return lines


def _version_dirs(path: str) -> list[str]:
    if not os.path.isdir(path):
        return []
    found = [
        d for d in os.listdir(path)
        if os.path.isfile(os.path.join(path, d, "dataset_info.json"))
    ]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))


def prepared_dir(name: str, data_dir: str | None = None) -> str:
    """Directory of a prepared dataset ``builder/config[/version]`` (latest version)."""
    root = resolve_data_dir(data_dir)
    path = os.path.join(root, *name.split("/"))
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        return path
    versions = _version_dirs(path)
    if not versions:
        raise DataError(
            f"no prepared dataset {name!r} under {root} (looked in {path}). Prepare it with "
            f"`memgpt-jax data prepare ...` using the same data dir (--data-dir or "
            f"${DATA_DIR_ENV}); `memgpt-jax data list` shows what is prepared."
        )
    return os.path.join(path, versions[-1])


def load_split(name: str, split: str, data_dir: str | None = None) -> Sequence[Mapping[str, Any]]:
    """Random-access source (``len`` and ``[i]``) of a prepared split.

    ``name`` is ``builder/config`` as printed by ``prepare`` (e.g.
    ``memgpt_imdb/val10_seed0``); ``split`` accepts tfds syntax such as
    ``"train+validation"`` or ``"train[:10%]"``. Text features come back as
    UTF-8 ``bytes``. Reading needs no TensorFlow and no builder class.
    """
    path = prepared_dir(name, data_dir)
    builder = tfds.builder_from_directory(path)
    try:
        source = builder.as_data_source(split=split)
    except (KeyError, ValueError) as err:
        known = ", ".join(sorted(builder.info.splits))
        raise DataError(f"{name} has no split {split!r} (splits: {known}): {err}") from err
    _check_readable(source, split, path)
    return source


def _check_readable(source: Sequence[Mapping[str, Any]], split: str, path: str) -> None:
    """Reads the first and last record: a truncated ``array_record`` file loses its
    footer, and every record then decodes to ``None`` values instead of failing."""
    for i in sorted({0, len(source) - 1}):
        if i < 0:
            continue
        try:
            record = source[i]
        except Exception as err:  # the reader's own errors vary by file format and damage
            raise DamagedDataError(f"split {split!r} in {path} is damaged (record {i}: {err})") from err
        missing = sorted(k for k, v in record.items() if v is None)
        if missing:
            raise DamagedDataError(f"split {split!r} in {path} is damaged: record {i} cannot be read "
                                   f"(a file was truncated or changed after preparation)")


def dataset_report(name: str, data_dir: str | None = None) -> dict[str, Any]:
    """Split counts and the preparation report of a prepared dataset."""
    builder = tfds.builder_from_directory(prepared_dir(name, data_dir))
    counts = {k: int(v.num_examples) for k, v in builder.info.splits.items()}
    meta = builder.info.metadata or {}
    return {"path": str(builder.data_dir), "splits": counts, "report": dict(meta.get("report", {}))}


def dataset_metadata(name: str, data_dir: str | None = None) -> dict[str, Any]:
    """What the builder stored with a prepared dataset (``report``, ``settings``, and
    builder-specific entries such as the dialogue builder's ``entities``)."""
    return dict(tfds.builder_from_directory(prepared_dir(name, data_dir)).info.metadata or {})


def list_prepared(data_dir: str | None = None) -> list[str]:
    """``builder/config`` names of the datasets prepared under ``data_dir``."""
    root = resolve_data_dir(data_dir)
    names = []
    if not os.path.isdir(root):
        return names
    for builder in sorted(os.listdir(root)):
        bdir = os.path.join(root, builder)
        if not os.path.isdir(bdir):
            continue
        for config in sorted(os.listdir(bdir)):
            if _version_dirs(os.path.join(bdir, config)):
                names.append(f"{builder}/{config}")
    return names


def as_text(value: Any) -> str:
    """A text feature as ``str`` (tfds data sources return UTF-8 ``bytes``)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def iter_texts(sources: Sequence[Sequence[Mapping[str, Any]]], key: str = "text") -> Iterator[str]:
    """The ``key`` texts of each record of each source, in stored order; ``key`` may
    name several features, comma-separated (``"prompt,target"``)."""
    keys = [k for k in key.split(",") if k]
    for source in sources:
        for i in range(len(source)):
            record = source[i]
            for k in keys:
                yield as_text(record[k])
