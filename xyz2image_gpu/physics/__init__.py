"""Physics: one module per physical effect, each holding everything of that effect that is
not a kernel.

* :mod:`.probe`: the probe's intensity from its optics, fitted by a sum of Gaussians;
* :mod:`.thermal`: r.m.s. thermal displacements (Debye–Waller) and the widths they give;
* :mod:`.column`: the column (channelling) correction of each atom's weight and widths;
* :mod:`.augment`: frozen-phonon jitter, shot and read noise, scan distortions;
* :mod:`.random`: their counter-based draws (Philox4x32-10) in array code, the NumPy
  fallback of the compiled kernels' ``philox.h`` and the reference of its tests;
* :mod:`.calibrate`: fitting render settings to a reference image;
* :mod:`.constants`: the physical constants they share (CODATA 2018, SI).
"""
