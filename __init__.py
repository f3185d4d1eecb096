"""ImpliCity for QGIS.

The repository root is both the QGIS plugin folder (deployed as ``implicity/``) and the Python
package ``implicity`` for headless use (``pip install -e .``). Importing this module must stay
cheap and must never import QGIS or torch: headless users import ``implicity.core`` through it.
"""

__version__ = "0.1.0"


def classFactory(iface):
    """QGIS plugin entry point; imported lazily so headless use never touches QGIS."""
    import os

    # Before torch loads in QGIS: idle OpenMP threads sleep rather than spin, so the desktop keeps
    # its share of the CPU (the engine also leaves one core free there, core/reconstruct/threads.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .implicity_qgis.plugin import ImpliCityPlugin

    return ImpliCityPlugin(iface)
