"""Markets as images: indicator matrices, Gramian angular fields, Markov transition fields,
candlestick rasters and order-book heatmaps.

Every encoder is plain numpy / numba: windows (or candles, or snapshots) in,
images ``[N, C', H, W]`` out. Each says its output shape before it runs
(``output_shape``) and how many bars of history one image reads
(``input_length``); an image at ``ts`` reads only the window that ends at ``ts``.
``pipeline.encodings.build`` turns the warehouse into memory-mapped image
files with their ``encodings.<name>_index`` tables.
"""
