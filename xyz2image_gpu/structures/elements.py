"""Chemical element symbols and atomic numbers.

A dependency-free table of the 118 named elements, the two look-ups the rest of the
package needs: symbol -> atomic number (case-insensitive, also accepting numeric tokens as
they appear in some XYZ files) and atomic number -> symbol, and the one parser of element
lists (``exclude_elements``, ``--exclude-elements C,H``) and of per-element values
(``thermal_overrides``, ``--thermal-rms Au=0.085``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

import numpy as np

__all__ = [
    "MAX_Z",
    "SYMBOLS",
    "ElementList",
    "ElementValues",
    "UnknownElementError",
    "atomic_number",
    "element_numbers",
    "element_values",
    "normalize_elements",
    "symbol",
]

#: An element list: a symbol or atomic number, a comma-separated string of them, or an
#: iterable of them; None for none.
ElementList = Union[str, int, Iterable[Union[str, int]], None]
#: Per-element values: a mapping ``{element: value}``, ``(element, value)`` pairs or
#: ``"El=value"`` strings, or one comma-separated string of those; None for none.
ElementValues = Union[Mapping[Any, Any], Iterable[Any], str, None]

#: Element symbols indexed by atomic number; index 0 is the placeholder ``"X"``.
SYMBOLS: tuple[str, ...] = (
    "X",
    "H", "He",
    "Li", "Be", "B", "C", "N", "O", "F", "Ne",
    "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba",
    "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra",
    "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr",
    "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)  # fmt: skip

#: Largest atomic number in :data:`SYMBOLS`.
MAX_Z: int = len(SYMBOLS) - 1

# Lower-cased symbol -> Z, for the real elements only (the placeholder "X" is not an element).
_Z_BY_LOWER: dict[str, int] = {s.lower(): z for z, s in enumerate(SYMBOLS) if z > 0}


def atomic_number(token: str | int) -> int:
    """Return the atomic number for an element symbol or an atomic-number token.

    Parameters
    ----------
    token : str or int
        An element symbol in any case (``"Au"``, ``"au"``, ``"AU"``), an integer atomic
        number, or a string holding one (``"79"``). Surrounding whitespace is ignored.

    Returns
    -------
    int
        The atomic number Z, ``1 <= Z <= 118``.

    Raises
    ------
    KeyError
        If the token is not a known element symbol or an integer in ``1..118``. The message
        names the token.
    """
    if isinstance(token, (bool, np.bool_)):
        raise KeyError(f"not an element: {token!r}")
    if isinstance(token, (int, np.integer)):
        z = int(token)
        if 1 <= z <= MAX_Z:
            return z
        raise KeyError(f"atomic number out of range 1..{MAX_Z}: {token!r}")
    if isinstance(token, str):
        text = token.strip()
        z_sym = _Z_BY_LOWER.get(text.lower())
        if z_sym is not None:
            return z_sym
        if text.isascii() and text.isdigit():  # plain digits: no sign, no underscores
            z = int(text)
            if 1 <= z <= MAX_Z:
                return z
            raise KeyError(f"atomic number out of range 1..{MAX_Z}: {token!r}")
    raise KeyError(f"unknown element: {token!r}")


def symbol(z: int) -> str:
    """Return the element symbol for an atomic number.

    Parameters
    ----------
    z : int
        Atomic number, ``1 <= z <= 118``.

    Returns
    -------
    str
        The symbol with its usual capitalisation (``79`` -> ``"Au"``).

    Raises
    ------
    KeyError
        If ``z`` is not an integer in ``1..118``.
    """
    if isinstance(z, (bool, np.bool_)) or not isinstance(z, (int, np.integer)):
        raise KeyError(f"atomic number must be an integer, got {z!r}")
    zi = int(z)
    if not 1 <= zi <= MAX_Z:
        raise KeyError(f"atomic number out of range 1..{MAX_Z}: {z!r}")
    return SYMBOLS[zi]


# ------------------------------------------------------------------------ element lists


class UnknownElementError(ValueError, KeyError):
    """An element list names something that is not an element.

    A :class:`ValueError` (a bad argument) that is also a :class:`KeyError`, as
    :func:`atomic_number` raises for one token.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _tokens(elements: Any) -> list[Any]:
    if elements is None:
        return []
    if isinstance(elements, str):
        return elements.split(",")
    if isinstance(elements, (int, np.integer)):
        return [elements]
    return list(elements)


def _number(token: Any, what: str) -> int:
    try:
        return atomic_number(token)
    except KeyError:
        prefix = f"{what}: " if what else ""
        raise UnknownElementError(f"{prefix}unknown element {token!r}") from None


def element_numbers(elements: ElementList, *, what: str = "") -> tuple[int, ...]:
    """Atomic numbers of an element list, each once, ascending.

    Parameters
    ----------
    elements : str, int, iterable of str or int, or None
        Symbols in any case or atomic numbers; a string is a comma-separated list, blank
        entries are skipped.
    what : str
        The argument's name, to begin the error message with.

    Raises
    ------
    UnknownElementError
        An entry is not an element (a ValueError and a KeyError).
    """
    numbers = set()
    for token in _tokens(elements):
        if isinstance(token, str):
            token = token.strip()
            if not token:
                continue
        numbers.add(_number(token, what))
    return tuple(sorted(numbers))


def normalize_elements(elements: ElementList, *, what: str = "") -> tuple[str, ...]:
    """Symbols of an element list (see :func:`element_numbers`), each once, sorted by Z."""
    return tuple(SYMBOLS[z] for z in element_numbers(elements, what=what))


def element_values(pairs: ElementValues, *, what: str = "") -> tuple[tuple[str, float], ...]:
    """``(symbol, value)`` pairs of per-element values, in the order given.

    Parameters
    ----------
    pairs : mapping, iterable of (element, value) pairs or ``"El=value"`` strings, str, None
        Elements as symbols in any case or atomic numbers; a string is a comma-separated
        list of ``El=value``. An element given twice keeps its last value.
    what : str
        The argument's name, to begin the error message with.

    Raises
    ------
    UnknownElementError
        An element that is not one.
    ValueError
        An entry that is not ``element=number`` or ``(element, number)``.
    """
    prefix = f"{what}: " if what else ""
    items = pairs.items() if isinstance(pairs, Mapping) else _tokens(pairs)
    values: dict[str, float] = {}
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                continue
            element, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"{prefix}{item.strip()!r}: expected ELEMENT=number")
        else:
            try:
                element, value = item
            except (TypeError, ValueError):
                raise ValueError(
                    f"{prefix}{item!r}: expected an (element, number) pair") from None
        z = _number(element.strip() if isinstance(element, str) else element, what)
        try:
            values[SYMBOLS[z]] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{prefix}{SYMBOLS[z]}: {value!r} is not a number") from None
    return tuple(values.items())
