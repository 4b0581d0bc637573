"""How the metrics split their work: sizes that bound memory and change no result. coral.fidelity works
in these pieces, and the cost model (coral.job_costs) sizes an evaluation job from the same numbers."""

DISTANCE_BLOCK = 4096           # rows (and columns) of a block of pairwise distances
FID_BATCH_ELEMENTS = 2 ** 25    # float64 elements of the per-class features stacked into one FID batch
KMEANS_BATCH = 2048             # points of one mini-batch k-means step
