"""The analysis pipeline, one module per stage.

Each stage is a small function over plain NumPy / SciPy data and can be used alone:

``capture``
    layer selection, branch layout and per-layer activations (eager Keras).
``lrp``
    LRP relevance maps: the native eager engine (``lrp.native``, ``lrp.engines``) and iNNvestigate
    in a worker process (``lrp.worker``).
``embed``
    flatten per-sample maps into unit vectors, so that inner product is cosine similarity.
``knn``
    approximate cosine k-nearest-neighbour graph (FAISS), symmetric, sparse, non-negative.
``cluster``
    Markov clustering (MCL) of that graph into a partition of the samples; ``cluster_layer`` runs
    kNN + MCL for one layer.
``flows``
    columns, barycentric ordering and flows between consecutive columns (:class:`FlowGraph`).
``render``
    the interactive Plotly Sankey page.
``store``
    versioned JSON + npz files of a run, and :func:`load_run`.
``compare``
    two epochs compared: per layer ARI and the samples whose cluster changed (``Run.compare``).
``aggregate``
    per-class mean activation or relevance of each unit or channel, accumulated batch by batch.
``project``
    2-D projection of a layer's embedding (UMAP, or PCA), aligned from epoch to epoch (Procrustes).
``views_figures``
    the class-means heatmap and the animated projection, as Plotly figures.
"""
