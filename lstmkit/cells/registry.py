"""The one list of cells: layers, engines, the training model, tasks and the CLI all read it.

    register_cell(cell)   add a Cell (lstmkit.cells.base) under its unique name
    get_cell("lstm")      look one up (case-insensitive), with an error listing the known ones
    cell_names()          the registered names, in registration order

Engines keep their own tables from cell to kernel (keyed by the cell object, not its name), so a
newly registered cell runs on the engines that know it (the reference engine knows every cell)
and is refused with a reason by the others: never computed as some other cell.
"""

from __future__ import annotations

from lstmkit.cells.base import Cell

CELLS: dict[str, Cell] = {}


def register_cell(cell: Cell) -> Cell:
    """Register `cell` (an instance of a Cell subclass); returns it, so a module can write
    `JANET = register_cell(JANETCell())`."""
    if not isinstance(cell, Cell):
        raise TypeError(f"register_cell expects a lstmkit.cells.Cell instance, got {cell!r}")
    for attr in ("name", "state_names"):
        if not getattr(cell, attr, None):
            raise ValueError(f"cell {cell!r} must define a non-empty class attribute {attr!r}")
    if cell.state_names[0] != "h":
        raise ValueError(f"cell {cell.name}: the first state must be 'h', got {cell.state_names}")
    key = cell.name.lower()
    known = CELLS.get(key)
    if known is not None and known is not cell:
        raise ValueError(f"a cell named {cell.name!r} is already registered ({known!r})")
    CELLS[key] = cell
    return cell


def get_cell(name: str) -> Cell:
    """The registered cell called `name` (case-insensitive)."""
    try:
        return CELLS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown cell {name!r}; expected one of {cell_names()} "
            "(a new cell is registered with lstmkit.cells.register_cell)"
        ) from None


def cell_names() -> list[str]:
    """Registered cell names, lower case (as the CLI's --cell takes them)."""
    return list(CELLS)
