"""The analysis pipeline, one module per stage.

Each stage is a small function over plain NumPy / SciPy data and can be used alone:

``capture``
    per-layer activations (eager Keras) and LRP relevance maps (iNNvestigate, in a worker process).
``embed``
    flatten per-sample maps into unit vectors, so that inner product is cosine similarity.
``knn``
    approximate cosine k-nearest-neighbour graph (FAISS), symmetric, sparse, non-negative.
``cluster``
    Markov clustering (MCL) of that graph into a partition of the samples.
``flows``
    columns, barycentric ordering and flows between consecutive columns (:class:`FlowGraph`).
``render``
    the interactive Plotly Sankey page.
``store``
    versioned JSON + npz files of a run, and :func:`load_run`.
"""
