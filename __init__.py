"""ImpliCity for QGIS.

The repository root is both the QGIS plugin folder (deployed as ``implicity/``) and the Python
package ``implicity`` for headless use (``pip install -e .``). Importing this module must stay
cheap and must never import QGIS or torch: headless users import ``implicity.core`` through it.
"""

__version__ = "0.1.0"


def classFactory(iface):
    """QGIS plugin entry point; imported lazily so headless use never touches QGIS."""
    from .implicity_qgis.plugin import ImpliCityPlugin

    return ImpliCityPlugin(iface)
