"""Strip the notebooks before committing them.

    python scripts/strip_notebook_outputs.py                 # every notebooks/*.ipynb, in place
    python scripts/strip_notebook_outputs.py --check         # exit 1 if any would change (CI, pre-commit)
    python scripts/strip_notebook_outputs.py path/to/nb.ipynb ...

Removes every output, execution count and widget state, except in the cells nbval checks (those
holding ``# NBVAL_CHECK_OUTPUT``): they keep their text outputs (stdout and ``text/plain`` results)
and their execution count, because nbval only compares cells whose reference has been run.
Also drops run-dependent metadata (execution timestamps, the Python version) so that
re-executing a notebook does not change the committed file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
CELL_METADATA_DROP = ("execution", "collapsed", "scrolled", "ExecuteTime", "widgets")
NOTEBOOK_METADATA_KEEP = ("kernelspec", "colab", "accelerator")
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _reference_outputs(outputs):
    """The text of a checked cell's outputs: stdout streams and text/plain results, nothing else."""
    kept = []
    for out in outputs:
        if out.get("output_type") == "stream" and out.get("name") == "stdout":
            kept.append(nbformat.v4.new_output("stream", name="stdout", text=out["text"]))
        elif out.get("output_type") in ("execute_result", "display_data") and "text/plain" in out.get("data", {}):
            data = {"text/plain": out["data"]["text/plain"]}
            if out["output_type"] == "execute_result":
                kept.append(nbformat.v4.new_output("execute_result", data=data,
                                                   execution_count=out.get("execution_count")))
            else:
                kept.append(nbformat.v4.new_output("display_data", data=data))
    return kept


def strip_notebook(nb):
    """Strip ``nb`` (an ``nbformat`` notebook) in place and return it."""
    for key in list(nb.metadata):
        if key not in NOTEBOOK_METADATA_KEEP:
            del nb.metadata[key]
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        for key in CELL_METADATA_DROP:
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        if CHECK_MARKER in cell.source:
            cell.outputs = _reference_outputs(cell.outputs)
            if cell.execution_count is None and cell.outputs:
                raise ValueError(f"a {CHECK_MARKER} cell has outputs but no execution count; re-execute the notebook")
        else:
            cell.outputs = []
            cell.execution_count = None
    return nb


def strip_file(path: Path, check: bool = False) -> bool:
    """Strip one file; returns True if it was (or, with ``check``, would be) changed."""
    before = path.read_text(encoding="utf-8")
    nb = strip_notebook(nbformat.reads(before, as_version=4))
    after = nbformat.writes(nb) + "\n"
    if after == before:
        return False
    if not check:
        path.write_text(after, encoding="utf-8")
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is not stripped")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    changed = [p for p in paths if strip_file(p, check=args.check)]
    for p in changed:
        print(f"{'not stripped' if args.check else 'stripped'}: {p}")
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
