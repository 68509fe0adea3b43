"""The analysis pipeline, one module per stage, listed here in pipeline order.

Each stage is a small function over plain NumPy / SciPy data and can be used alone; a module
imports only modules listed before it (``tests/test_layout.py`` checks it; a drawing method such as
``FlowGraph.figure`` may import the renderer where it is called).

Capture (runs the model)
    ``layergraph``: the model as a flat list of layer calls, nested models inlined (Keras 2 and 3).
    ``embed``: per-sample maps to unit vectors (inner product = cosine), reduced while streaming.
    ``aggregate``: per-class mean activation or relevance of each unit or channel, batch by batch.
    ``neurons``: a layer's units clustered by their class profiles, the clusters x classes matrix
    seriated, and the samples that excite each cluster most (CNNVis).
    ``capture``: the columns (every layer, or a deep model's block outputs), branch layout, and the
    forward pass through the held-out set.
    ``outputs``: predictions, accuracy and loss from the model's outputs.
    ``lrp``: LRP relevance maps: the native eager engine (``lrp.native``, ``lrp.engines``) and
    iNNvestigate in a worker process (``lrp.worker``).

Analysis (pure; :func:`flowcallback.core.stages.analyse` runs it)
    ``knn``: cosine k-nearest-neighbour graph (FAISS), symmetric, sparse, non-negative.
    ``cluster``: Markov clustering (MCL) of that graph; ``cluster_layer`` runs kNN + MCL for a layer.
    ``match``: clusters keep their id from one snapshot to the next (Hungarian matching).
    ``flows``: columns, barycentric ordering and flows between consecutive columns (``FlowGraph``).
    ``metrics``: per layer, how the clusters separate classes and predictions (NMI, ARI, purity).
    ``project``: 2-D projection of a layer (UMAP, or PCA), aligned from epoch to epoch (Procrustes).
    ``stages``: the analysis of one snapshot, stage by stage, with its timing hooks.

Across epochs
    ``history``: samples moving between clusters over the epochs; confusion over training.
    ``compare``: two epochs compared: per layer ARI and the samples whose cluster changed.
    ``sets``: two held-out sets of one run compared: per layer the gap in class separation and the
    difference of the units' class means (DNNViz's difference mode across data sets).

Output
    ``render``: the per-epoch Plotly Sankey figure and page.
    ``views_figures``: the class-means heatmap, the neuron clusters and the animated projection.
    ``runpage``: the run page ``index.html`` (its template: ``flowcallback/templates``).
    ``tensorboard``: layer metrics as TensorBoard scalars.
    ``store``: the run directory's format: versioned JSON + npz files of each epoch, written
    atomically and read back as untrusted input (:func:`flowcallback.load_run` reads it for scripts).

Helpers: ``_params`` (parameter constraints), ``_inputs`` (the held-out inputs of a model with several
inputs), ``_keras`` (Keras 2 and 3), ``_notes`` (typed notes),
``_priority`` (thread niceness), ``_files`` (atomic writes, safe reads), ``_npz`` (the hardened npz
reader), ``_schemas`` (the JSON schemas), ``_mcl_kernel`` (the compiled MCL kernel), ``_accel`` (kNN
and MCL with ``keras.ops``, for a GPU).
"""
