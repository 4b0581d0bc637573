"""The columns of a metrics stage's per-class CSV and the metrics averaged over a group of classes: one
home, read by the stage that writes them (coral.metrics) and the tables that read them (coral.tables)."""

PER_CLASS_COLUMNS = ["class", "class_name", "train_count", "group", "num_generated", "num_real",
                     "fid", "kid_mean", "kid_std", "precision", "recall", "accuracy"]
# averaged over the classes of each head/medium/tail group (the metrics JSON's "groups")
GROUP_METRICS = ("fid", "kid_mean", "precision", "recall", "accuracy")
