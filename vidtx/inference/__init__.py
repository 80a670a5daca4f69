"""The library behind `python -m vidtx.predict` (the command itself is vidtx/predict.py).

preprocess: video files and .npy clips to the checkpoint's evaluation views, and their checks.
classifier: the checkpoint (converted, or a train.py run), its class names, the model calls in
  batches, the aggregation of views.
pictures: views back to pixels; the attention rollout picture (--rollout).
many_videos: many videos (or windows) in model calls shared across videos: results, features.
class_folders: a folder of class folders: true classes, accuracy, per-class table, confusion.
results: where the many-videos results go (--out, stdout, --features).
timeline: the windows of --window and the --timeline_png picture.

These modules import JAX, TensorFlow and PyAV inside their functions: the command answers --help
and flag errors at once.
"""
