"""Chemical element symbols and atomic numbers.

A dependency-free table of the 118 named elements, and the two look-ups the rest of the
package needs: symbol -> atomic number (case-insensitive, also accepting numeric tokens as
they appear in some XYZ files) and atomic number -> symbol.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAX_Z",
    "SYMBOLS",
    "atomic_number",
    "symbol",
]

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
