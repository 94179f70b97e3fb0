"""A sweep's results page: per method and game order, the score matrix and the continual-learning
metrics as IQM and mean with 95% stratified-bootstrap confidence intervals (rliable), the plots,
and every cell's compact results, so the page can be rebuilt after the sweep directory is gone.

    python -m ewc_experiments.results_page SWEEP_DIR --out docs/results/minatar.md
    python -m ewc_experiments.results_page docs/results/minatar/cells --out docs/results/minatar.md
    python -m ewc_experiments.results_page SWEEP_DIR --choose-lambda ewc     # prints the lambda, e.g. 1000
    python -m ewc_experiments.results_page SWEEP_DIR --print-references      # lines for envs/games.py

Beside OUT, in the folder named like it without `.md` (docs/results/minatar/):

    cells/<cell>.json          the cell's compact results (results_cells.py)
    cells/<cell>.curves.json   its continual-evaluation curves
    curves_<order>.png         every game's evaluation score across the sequence, one line per method
    matrix_<group>_<order>.png normalised score after each game, mean over seeds
    single_game.png            each game's learning curve when it is trained first (fine-tuning)

This module is the command line and `write_page`, the one call that writes the page: the cells are
read and saved by results_cells.py, the scores and statistics are results_scores.py's (its docstring
defines every metric), the figures results_plots.py's and the page's text results_markdown.py's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from envs import games as game_table
from ewc_experiments.cli import OneLineParser, fail
from ewc_experiments.results_cells import ResultsError, export_cells, load_cells, restore_cells
from ewc_experiments.results_markdown import Page, build_page
from ewc_experiments.results_scores import (
    choose_lambda,
    measured_references,
    reference_lines,
    references,
    stale_references,
)


def assets_folder(out: Path) -> Path:
    """docs/results/minatar.md -> docs/results/minatar/"""
    return out.with_suffix("")


def write_page(
    source: Path,
    out: Path,
    main_order: tuple[str, ...] | None = None,
    export_only: bool = False,
    also: Sequence[Path] = (),
    selection: Sequence[Path] = (),
) -> Page | None:
    """Read the cells, save a sweep's compact results beside OUT, and (unless export_only) write the
    page from them and the saved cells of the folders in `also` (an experiment's other sweeps); the
    lambda section from the folders in `selection` when given (selection seeds, never reported)."""
    cells, incomplete = load_cells(source)
    saved = assets_folder(out) / "cells"
    if (source / "cells").is_dir() and source.resolve() != saved.resolve():
        export_cells(cells, saved)
    for folder in also:
        more, unfinished = load_cells(folder)
        cells, incomplete = cells + more, incomplete + unfinished
    if export_only:
        return None
    selected = [data for folder in selection for data in load_cells(folder)[0]]
    page = build_page(cells, incomplete, assets_folder(out), out.parent, main_order, selection=selected)
    out.write_text(page.markdown)
    return page


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a sweep directory (with cells/) or a folder of saved cell JSON")
    parser.add_argument("--out", type=Path, help="the page to write, e.g. docs/results/minatar.md")
    parser.add_argument(
        "--choose-lambda",
        metavar="METHOD",
        help="print the lambda of METHOD's cells with the highest final mean normalised score, pooled over orders and seeds",
    )
    parser.add_argument(
        "--print-references",
        action="store_true",
        help="print the MinAtar references the cells measure, as lines for envs/games.py",
    )
    parser.add_argument(
        "--check-references",
        action="store_true",
        help="fail unless envs/games.py holds the MinAtar references the cells measure (printing them if not)",
    )
    parser.add_argument("--main-order", help="comma list: the sweep's main game order (default: the order with most cells)")
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="with --out: add the saved cells of FOLDER to the page (repeatable)",
    )
    parser.add_argument(
        "--selection",
        type=Path,
        action="append",
        default=[],
        metavar="FOLDER",
        help="with --out: the lambda sweeps' saved cells, for the page's lambda section (repeatable)",
    )
    parser.add_argument("--export-only", action="store_true", help="only save the cells' JSON beside --out")
    parser.add_argument(
        "--restore-into",
        type=Path,
        metavar="SWEEP_DIR",
        help="write the saved cells of SOURCE back as evaluated cells of SWEEP_DIR, so a sweep skips them",
    )
    args = parser.parse_args(argv)
    if (args.also or args.selection) and not args.out:
        parser.error("--also and --selection add cells to the page: give --out too")
    if not (args.out or args.choose_lambda or args.print_references or args.check_references or args.restore_into):
        parser.error("give --out, --choose-lambda, --print-references, --check-references or --restore-into")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        main_order = tuple(game_table.parse_games(args.main_order)) if args.main_order else None
        if args.choose_lambda or args.print_references:
            cells, _ = load_cells(args.source)
            if args.choose_lambda:
                print(f"{choose_lambda(cells, references(cells), args.choose_lambda):g}")
            if args.print_references:
                print(reference_lines(measured_references(cells), cells[0].steps_per_game if cells else None))
        if args.check_references:
            cells, _ = load_cells(args.source)
            stale = stale_references(measured_references(cells))
            if stale:
                print(reference_lines(stale, cells[0].steps_per_game))
                return fail(
                    ResultsError(
                        f"envs/games.py MINATAR_REFERENCE_SCORES lacks or differs from what {args.source} measures "
                        f"for {', '.join(stale)}: paste the lines above into it"
                    )
                )
        if args.restore_into:
            cells, _ = load_cells(args.source)
            print(f"restored {restore_cells(cells, args.restore_into)} cells into {args.restore_into}", file=sys.stderr)
        if args.out:
            page = write_page(args.source, args.out, main_order, args.export_only, args.also, args.selection)
            where = assets_folder(args.out)
            print(f"wrote {where / 'cells'}" if page is None else f"wrote {args.out} and {where}/", file=sys.stderr)
    except (ValueError, OSError) as error:  # ResultsError, StatisticsError, ConfigError, a bad --main-order
        return fail(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
