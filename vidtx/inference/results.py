"""Where `vidtx.predict`'s results go: --out (.jsonl or .csv), stdout lines, --features (.npy
files and their index.jsonl), the --window timeline; how file names and ids are written.

Every file is written atomically (vidtx.outputs.atomic_writer): --out and index.jsonl when the run
ends, each .npy as it comes. A row is formatted whole before it is written, so a row that cannot
be written (text the file cannot hold, a NaN) becomes that row's error and the others stay; the
counts are of what was written.
"""

import contextlib
import csv
import io
import json
import os
import sys
from typing import Any

import numpy as np

from vidtx import outputs


def save_array(path: str, array: np.ndarray) -> None:
  """`array` as float32 .npy at exactly `path` (np.save would add '.npy' to a name without it),
  atomically: a failure leaves the previous file (or none), never half of one."""
  with outputs.atomic_writer(path, "wb") as f:
    np.save(f, array.astype(np.float32))


def printable(text: str) -> str:
  """`text` as it can be written to a UTF-8 file: a file name's bytes that are not UTF-8 (Linux
  hands them to Python as surrogates) as \\xNN; any other text unchanged."""
  return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# The readable part of a feature file's name, in UTF-8 bytes (a file name has at most 255).
_FEATURE_NAME_BYTES = 120


def feature_name(number: int, video_id: str, window: int | None) -> str:
  """The .npy name (without '.npy') of input `number`'s features, or of its window `window`:
  '000012_a__b.mp4', '000012_a__b.mp4__w00003'. The input's position makes names injective
  (a/b.mp4 and a__b.mp4 are inputs 1 and 2); the id, path separators as '__' and other
  characters than letters, digits, '.', '-' and '_' as '_', keeps them readable (its end, when
  long)."""
  readable = video_id.replace(os.sep, "__").replace("/", "__")
  readable = "".join(c if c.isalnum() or c in ".-_" else "_" for c in readable)
  while len(readable.encode("utf-8")) > _FEATURE_NAME_BYTES:
    readable = readable[1:]
  return f"{number:06d}_{readable}" + (f"__w{window:05d}" if window is not None else "")


class Results:
  """Where the results go: --out (.jsonl or .csv, written atomically when the run ends), stdout
  lines, --features (.npy files and index.jsonl), the timeline. Each row is formatted whole
  before it is written: a row that cannot be written (text the file cannot hold) becomes that
  row's error, and the other rows stay. Counts, per input, what the results hold."""

  def __init__(
    self,
    stack: contextlib.ExitStack,
    out: str | None,
    features: str | None,
    windows: bool,
  ):
    self.windows = windows
    self.out_file = self.csv = None
    if out:
      self.out_file = stack.enter_context(outputs.atomic_writer(out))
      self.csv = out.lower().endswith(".csv")
      if self.csv:
        window_columns = ["start", "end"] if windows else []
        self.out_file.write(
          self._csv_line(["id", *window_columns, "top1", "top1_prob", "top_k", "error"])
        )
    self.features = features
    self.index = None
    self.written: list[str] = []  # Files written into --features.
    if features:
      self.index = stack.enter_context(outputs.atomic_writer(os.path.join(features, "index.jsonl")))
      self.written.append("index.jsonl")
    self.timeline: dict[str, list[tuple[float, float, str]]] = {}
    self.succeeded: dict[int, bool] = {}  # input number -> all its rows written without error

  @staticmethod
  def _csv_line(row: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    return buffer.getvalue()

  def _line(self, record: dict[str, Any]) -> str:
    """The record as one line of --out (or stdout); raises ValueError when it cannot be."""
    if self.csv:
      window = [record.get("start", ""), record.get("end", "")] if self.windows else []
      top = record.get("top_k") or [{"label": "", "prob": ""}]
      listed = ";".join(f"{t['label']}:{t['prob']:.4f}" for t in record.get("top_k", []))
      line = self._csv_line(
        [record["id"], *window, top[0]["label"], top[0]["prob"], listed, record.get("error", "")]
      )
    elif self.out_file is not None:
      line = json.dumps(record, allow_nan=False) + "\n"
    else:
      where = f" [{record['start']:.2f}-{record['end']:.2f}s]" if "start" in record else ""
      if "error" in record:
        line = f"{record['id']}{where}: error: {record['error']}\n"
      else:
        best = record["top_k"][0]
        line = f"{record['id']}{where}: {best['label']} {best['prob']:.4f}\n"
    line.encode("utf-8")  # The file's encoding: fails here, not halfway through the write.
    return line

  def result(
    self,
    number: int,
    window: int | None,
    record: dict[str, Any],
    embedding: np.ndarray | None = None,
    tokens: np.ndarray | None = None,
  ) -> None:
    """Writes the `record` of input `number` (or of its window `window`; an error if it has
    'error'), and its features."""
    record["id"] = printable(record["id"])
    if "error" in record:
      record["error"] = printable(record["error"])
    try:
      line = self._line(record)
    except (ValueError, TypeError) as e:
      error = f"{record['id']}: cannot write its result ({e})."
      print(f"error: {error}", file=sys.stderr, flush=True)
      record = {k: record[k] for k in ("id", "start", "end") if k in record} | {"error": error}
      line, embedding = self._line(record), None
    if self.out_file is not None:
      self.out_file.write(line)
    else:
      print(line, end="", flush=True)
    ok = "error" not in record
    self.succeeded[number] = self.succeeded.get(number, True) and ok
    if ok and self.windows:
      self.timeline.setdefault(record["id"], []).append(
        (record["start"], record["end"], record["top_k"][0]["label"])
      )
    if self.index is not None and embedding is not None:
      name = feature_name(number, record["id"], window)
      entry = {k: record[k] for k in ("id", "start", "end") if k in record}
      entry.update(self._save(name, embedding, ""))
      if tokens is not None:
        entry.update(self._save(name, tokens, "tokens_"))
      self.index.write(json.dumps(entry) + "\n")

  def _save(self, name: str, array: np.ndarray, prefix: str) -> dict[str, Any]:
    name += (".tokens" if prefix else "") + ".npy"
    save_array(os.path.join(self.features, name), array)
    self.written.append(name)
    return {f"{prefix}file": name, f"{prefix}shape": list(array.shape)}

  def counts(self) -> tuple[int, int]:
    """(inputs whose rows all succeeded, inputs with an error row)."""
    ok = sum(self.succeeded.values())
    return ok, len(self.succeeded) - ok
