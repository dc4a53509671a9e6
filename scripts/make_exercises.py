"""Generate the exercise notebooks from the teaching notebooks.

    python scripts/make_exercises.py            # write notebooks/exercises/*.ipynb
    python scripts/make_exercises.py --check    # change nothing; exit 1 if they are out of date (CI)

The teaching notebooks are the single source: an exercise's solution sits in a code cell between two
marker lines, and the exercise version replaces everything between them with a ``raise`` at the
markers' indentation. ``# HINT:`` lines inside the block stay in both versions:

    def gaussian_score(x, mean, std):                def gaussian_score(x, mean, std):
        # BEGIN SOLUTION                                 # HINT: it points from x to the mean
        # HINT: it points from x to the mean    ->       raise NotImplementedError("Exercise: ...")
        return -(x - mean) / std**2
        # END SOLUTION

Every teaching notebook ``notebooks/NN_name.ipynb`` with at least one such block gets
``notebooks/exercises/NN_name.ipynb``: the same cells and cell ids, the solutions replaced, a note for
the learner after the title, and no outputs. The markers never reach the exercise version; a block
left open, an END without a BEGIN, nested blocks and markers outside code cells are errors. The
output depends only on the teaching notebooks, so regenerating an up-to-date folder changes nothing.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END, HINT = "# BEGIN SOLUTION", "# END SOLUTION", "# HINT:"
RAISE = 'raise NotImplementedError("Exercise: write your solution here, then run the check cell below.")'
NOTE_ID = "exercise-version"
NOTE = ("> **Exercise version.** Each exercise below has a code cell with a stub ending in "
        "`raise NotImplementedError`: replace that line with your code (the `# HINT:` comments help), run the "
        "cell, then run the check cell after it. The check compares your function with the `sgm_helpers` package "
        "on random inputs and says in one sentence what is wrong, or congratulates you.")


def _strip_module():
    spec = importlib.util.spec_from_file_location("strip_notebook_outputs", ROOT / "scripts" / "strip_notebook_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exercise_source(source: str, where: str = "cell") -> tuple[str, int]:
    """``source`` with every solution block replaced by its hints and a ``raise``; also the number of blocks.

    ``where`` names the cell in error messages.
    """
    out, blocks, indent = [], 0, None
    for number, line in enumerate(source.split("\n"), start=1):
        marker = line.strip()
        if marker == BEGIN:
            if indent is not None:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution block")
            indent, blocks = line[: len(line) - len(line.lstrip())], blocks + 1
        elif marker == END:
            if indent is None:
                raise ValueError(f"{where}, line {number}: {END} without a {BEGIN}")
            out.append(indent + RAISE)
            indent = None
        elif indent is None or marker.startswith(HINT):
            out.append(line)
    if indent is not None:
        raise ValueError(f"{where}: a {BEGIN} is never closed by {END}")
    return "\n".join(out), blocks


def make_exercise_notebook(nb):
    """The exercise version of ``nb`` (an ``nbformat`` notebook), or None when it has no solution block."""
    strip = _strip_module()
    nb = strip.strip_notebook(copy.deepcopy(nb))
    blocks = 0
    for index, cell in enumerate(nb.cells):
        where = f"cell {index} ({cell.get('id', 'no id')})"
        if cell.cell_type != "code":
            if any(line.strip() in (BEGIN, END) for line in cell.source.split("\n")):
                raise ValueError(f"{where}: solution markers belong in code cells only")
            continue
        cell.source, found = exercise_source(cell.source, where)
        blocks += found
        cell.outputs, cell.execution_count = [], None
    if not blocks:
        return None
    note = nbformat.v4.new_markdown_cell(NOTE)
    note["id"] = NOTE_ID
    nb.cells.insert(1, note)
    return nb


def build(source_dir: Path) -> dict[str, str]:
    """{file name: exercise notebook text} for every teaching notebook in ``source_dir`` that has exercises."""
    built = {}
    for path in sorted(source_dir.glob("*.ipynb")):
        try:
            nb = make_exercise_notebook(nbformat.read(path, as_version=4))
        except ValueError as err:
            raise ValueError(f"{path.name}: {err}") from None
        if nb is not None:
            built[path.name] = nbformat.writes(nb) + "\n"
    return built


def stale(built: dict[str, str], out_dir: Path) -> list[str]:
    """The names in ``out_dir`` that differ from ``built``: changed, missing, or no longer generated."""
    existing = {p.name for p in out_dir.glob("*.ipynb")} if out_dir.is_dir() else set()
    names = sorted(existing | set(built))
    return [name for name in names
            if name not in built or name not in existing
            or (out_dir / name).read_text(encoding="utf-8") != built[name]]


def write(built: dict[str, str], out_dir: Path) -> list[str]:
    """Bring ``out_dir`` up to date with ``built`` (writing changed files, removing ones no longer generated)."""
    changed = stale(built, out_dir)
    if built:
        out_dir.mkdir(parents=True, exist_ok=True)
    for name in changed:
        if name in built:
            (out_dir / name).write_text(built[name], encoding="utf-8")
        else:
            (out_dir / name).unlink()
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the exercises are out of date")
    parser.add_argument("--source", type=Path, default=ROOT / "notebooks", help="the teaching notebooks' folder")
    parser.add_argument("--out", type=Path, default=None, help="default: SOURCE/exercises")
    args = parser.parse_args(argv)
    out_dir = args.out if args.out is not None else args.source / "exercises"
    built = build(args.source)
    if args.check:
        changed = stale(built, out_dir)
        for name in changed:
            print(f"out of date: {out_dir / name} (run python scripts/make_exercises.py)")
        return 1 if changed else 0
    for name in write(built, out_dir):
        print(f"{'wrote' if name in built else 'removed'}: {out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
