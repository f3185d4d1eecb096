"""Everything of ImpliCity that imports QGIS: plugin, Processing provider, algorithms, menus.

``core/`` and ``training/`` never import QGIS; this package never imports torch at load time.
"""
