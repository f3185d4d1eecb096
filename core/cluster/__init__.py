"""City scale: the reconstruction cut into blocks and run on a Dask cluster (see run.py)."""
