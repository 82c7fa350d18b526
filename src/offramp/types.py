"""Names for the shapes of data that cross the package's seams (the bottom layer: no imports of offramp)."""

from __future__ import annotations

from typing import Hashable, Iterable, Union

# texts as every entry point takes them: a list, tuple, NumPy array, pandas Series or pyarrow array
# of strings, or any iterable of strings
Texts = Iterable[str]
# labels: strings, or anything hashable that becomes one (numbers, say)
Labels = Iterable[Hashable]
# a JSON object as offramp writes it (a report's to_dict(), a record): read back only as JSON
JSONDict = dict[str, object]
# a cell of a data file, as the readers give it
Cell = Union[str, int, float, bool, None]
