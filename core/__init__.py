"""QGIS-free core of ImpliCity: geodata I/O, gridding, evaluation, the network and DSM extraction."""
