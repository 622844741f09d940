"""Looking inside recurrent nets from the core's gate traces: states, pictures, cell finding,
an interactive HTML page and the LSTMVis export."""

from lstmkit.inspect.cells import match_cells, predictive_cells, select_cells
from lstmkit.inspect.states import StateSet, collect_states

__all__ = ["StateSet", "collect_states", "match_cells", "predictive_cells", "select_cells"]
